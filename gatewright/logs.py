"""Log output as JSON lines (``GATEWRIGHT_LOG_FORMAT=json``), for log collectors.

Every record becomes one object: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, any
fields given with ``extra=`` (the access line's request id, account, tokens…) and ``exception``
when there is one. Secrets never reach a record: the access line carries a key's prefix only, and
no prompt or answer text is logged.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import orjson

# What every LogRecord has; anything else on a record came from ``extra=`` and is written out.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
# uvicorn adds its message again with terminal colours: noise in a log collector.
_LEFT_OUT = _STANDARD | {"color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _LEFT_OUT:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class CutAtShutdown(logging.Filter):
    """uvicorn logs each request it cancels when the shutdown timeout passes as an "Exception in
    ASGI application" with a traceback; it is the expected end of a graceful stop: one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, asyncio.CancelledError) and "graceful shutdown" in str(error):
            record.msg, record.args, record.exc_info = "a request was cut: the shutdown timeout passed", (), None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
