"""Structured logs that carry the trace and conversation of the event being handled."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "cbd_log_context", default=None
)


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Attach fields (trace_id, conversation_id, ...) to every log line inside the block."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, ready for a log pipeline."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render the record with its context fields."""
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            **(_context.get() or {}),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Human-friendly lines for a terminal, context fields appended."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service:<10} %(levelname)-5s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """Render the record with its context fields."""
        line = super().format(record)
        ctx = _context.get() or {}
        conv = ctx.get("conversation_id")
        return f"{line} [{conv}]" if conv else line


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Send every logger's output to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-message framework logs would drown ours; warnings still come through.
    for noisy in ("aiokafka", "faststream", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
