"""The embedded stack's own Temporal dev server: a port it chose, taken before it bound it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import app.stack
from app.stack import Stack
from tests.conftest import LAB_TIME_SCALE, TEST_TIMINGS


async def test_stack_chosen_temporal_port_taken_meanwhile_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Something (a lab device, another program) holds the port the stack picks for Temporal.
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real = app.stack.free_port
    picks = iter([real(), taken])  # the API's port, then Temporal's: the taken one

    monkeypatch.setattr(app.stack, "free_port", lambda: next(picks, None) or real())
    stack = Stack(data_dir=tmp_path / "stack", timings=TEST_TIMINGS, lab_time_scale=LAB_TIME_SCALE)
    try:
        settings = await stack.start()
        assert stack.temporal_port != taken
        assert settings.temporal_address == f"127.0.0.1:{stack.temporal_port}"
        assert stack.settings == settings
        # The stack's client is on the server that did start, and it serves the worker.
        assert stack.client.service_client.config.target_host == settings.temporal_address
        assert await stack.client.count_workflows() is not None
    finally:
        await stack.stop()
        squatter.close()
    log = (tmp_path / "stack" / "temporal.log").read_text()
    assert log.count("address already in use") == 1  # the first try, and only it
