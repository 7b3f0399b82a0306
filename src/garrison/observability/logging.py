"""Structured logs (L9, C6): one JSON object a line, the request id on every line of a request.

The request id lives in a ``ContextVar`` set by the ASGI front, so it follows the request into
worker threads (``anyio.to_thread`` copies the context) without being passed around. Every message
and traceback passes through the redaction layer: a token that slips into a log line comes out as
``[redacted]``.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from garrison.audit.redact import redact, redact_text

request_id_var: ContextVar[str | None] = ContextVar("garrison_request_id", default=None)

#: ``LogRecord`` attributes that are not caller-supplied ``extra`` fields.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI copy of the message
}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id"?, "exc"?, ...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and k != "request_id"}
        if extra:
            entry.update(redact(json.loads(json.dumps(extra, default=str))))
        if record.exc_info:
            entry["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


#: Libraries whose debug output carries SQL parameters or request internals.
_NOISY = (
    "alembic",
    "sqlalchemy",
    "httpx",
    "httpcore",
    "psycopg",
    "hpack",
    "multipart",
    "opentelemetry",
)


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A ``dictConfig`` for the service (and the HTTP server's own loggers), JSON on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    quiet = {"handlers": ["json"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": handler},
        "root": {"handlers": ["json"], "level": level.upper()},
        "loggers": {
            "_granian": quiet,  # granian's supervisor and workers
            "granian.access": quiet,  # off: /verify writes its own access lines (L9)
            # even at DEBUG: SQL parameters and HTTP internals are not ours to print (C6)
            **{name: {"level": "WARNING"} for name in _NOISY},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))


class _CliHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (so a replaced stream is followed); its
    type marks the handler ``configure_cli_logging`` installed, so it is installed once."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_cli_logging(level: str = "WARNING") -> None:
    """Commands other than ``serve`` log through the same redacting JSON formatter (C6) instead
    of Python's last-resort handler, which prints a message and its traceback unredacted."""
    root = logging.getLogger()
    if any(isinstance(h, _CliHandler) for h in root.handlers):
        return
    handler = _CliHandler()
    handler.setFormatter(JsonFormatter())
    handler.setLevel(level.upper())
    root.addHandler(handler)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
