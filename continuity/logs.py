"""How every process logs: text for a terminal, or one JSON object a line for a log collector.

Read from the environment, not the settings, so that it applies before the settings load:
CONTINUITY_LOG_LEVEL (DEBUG, INFO, WARNING, ...) and CONTINUITY_LOG_FORMAT (`text`, default,
or `json`). Above DEBUG, asyncssh and the twilio client log warnings only: at INFO they
write about a dozen lines a device session and every HTTP request's headers. A JSON line has
`time` (UTC, ISO 8601), `level`, `logger`, `message`, and `exception` when there is one;
messages never carry secrets (credentials are referenced by name, tokens only by id).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Libraries whose INFO is per connection or per request: warnings only unless DEBUG is asked.
CHATTY_LOGGERS = ("asyncssh", "twilio.http_client")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_format() -> str:
    value = os.environ.get("CONTINUITY_LOG_FORMAT", "text").strip().lower()
    return value if value in ("text", "json") else "text"


def configure_logging(default_level: str = "WARNING", *, stream: TextIO | None = None) -> None:
    """The root logger's one handler, as the environment says (replacing any before)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format() == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = os.environ.get("CONTINUITY_LOG_LEVEL", default_level).upper()
    root.setLevel(level if level in logging.getLevelNamesMapping() else default_level)
    for name in CHATTY_LOGGERS:
        chatty = logging.getLogger(name)
        chatty.setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)


__all__ = ["JsonFormatter", "configure_logging", "log_format"]
