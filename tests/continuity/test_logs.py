"""Logs: text for a terminal, or one JSON object a line for a collector."""

from __future__ import annotations

import io
import json
import logging

import pytest

from continuity.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_exception(monkeypatch):
    monkeypatch.setenv("CONTINUITY_LOG_FORMAT", "json")
    monkeypatch.setenv("CONTINUITY_LOG_LEVEL", "info")
    out = io.StringIO()
    configure_logging("WARNING", stream=out)
    log = logging.getLogger("continuity.worker")
    log.debug("not at info")
    log.info("worker polling %s", "continuity-site-ngoc-hoi")
    try:
        raise RuntimeError("Đắk Hà cabinet burnt")
    except RuntimeError:
        log.exception("sweep failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["level"], r["logger"], r["message"]) for r in lines] == [
        ("INFO", "continuity.worker", "worker polling continuity-site-ngoc-hoi"),
        ("ERROR", "continuity.worker", "sweep failed"),
    ]
    assert lines[0]["time"].endswith("+00:00")
    assert "RuntimeError: Đắk Hà cabinet burnt" in lines[1]["exception"]


def test_text_by_default_and_a_bad_level_falls_back(monkeypatch):
    monkeypatch.delenv("CONTINUITY_LOG_FORMAT", raising=False)
    monkeypatch.setenv("CONTINUITY_LOG_LEVEL", "LOUD")
    out = io.StringIO()
    configure_logging("WARNING", stream=out)
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    text = out.getvalue()
    assert "hidden" not in text and " WARNING x shown" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


@pytest.mark.parametrize(("level", "chatty_info_shown"), [("INFO", False), ("DEBUG", True)])
def test_per_connection_library_chatter_only_at_debug(monkeypatch, level, chatty_info_shown):
    """asyncssh writes ~12 INFO lines a device session (2,400 at 200 devices); the twilio
    client every request's headers: at INFO an operator sees our lines and their warnings."""
    monkeypatch.delenv("CONTINUITY_LOG_FORMAT", raising=False)
    monkeypatch.setenv("CONTINUITY_LOG_LEVEL", level)
    out = io.StringIO()
    configure_logging("WARNING", stream=out)
    try:
        for name in ("asyncssh", "twilio.http_client"):
            logging.getLogger(name).info("%s info", name)
            logging.getLogger(name).warning("%s warning", name)
        logging.getLogger("continuity.steps").info("step apply")
        text = out.getvalue()
        assert "step apply" in text
        assert "asyncssh warning" in text and "twilio.http_client warning" in text
        assert ("asyncssh info" in text) is chatty_info_shown
        assert ("twilio.http_client info" in text) is chatty_info_shown
    finally:
        for name in ("asyncssh", "twilio.http_client"):
            logging.getLogger(name).setLevel(logging.NOTSET)
