"""Recorded histories in tests/histories/ must replay against the current workflow code."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuity.audit import load_history, replay

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))
HISTORIES = [h for h in HISTORIES if not h.name.endswith(".meta.json")]


@pytest.mark.parametrize("path", HISTORIES, ids=[h.stem for h in HISTORIES])
async def test_recorded_history_replays_without_divergence(path: Path):
    outcome = await replay(load_history(path))
    assert outcome.ok, outcome.failure


def test_recorded_histories_exist():
    assert HISTORIES, "record one with `continuity demo` and copy it to tests/histories/"
