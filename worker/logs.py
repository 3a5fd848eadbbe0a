"""Logging for the `embed-worker` process: text or JSON lines on stderr, never a password.

Only the CLI calls `configure`; importing the package configures nothing.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from worker import conninfo
from worker.escapes import visible

# Attributes every LogRecord has; anything else was passed with `extra=` and goes into JSON.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Removes passwords from messages and arguments (connection strings end up in errors)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = conninfo.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RootChatterFilter(logging.Filter):
    """Drops INFO and DEBUG records sent straight to the root logger. Only third-party code
    does that (onnxruntime's quantizer prints a line per tensor while it makes an int8 model);
    ours logs under `worker.*`, and warnings from anywhere still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or record.levelno >= logging.WARNING


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = conninfo.redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """One line per record: Postgres errors carry `CONTEXT:`/`DETAIL:` on lines of their own,
    which would read as separate records (and break line-based log shipping); a tenant's names
    and errors in it are shown, not acted on (visible()). Tracebacks, which only bugs produce,
    keep their lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        lines = [line.strip() for line in record.message.splitlines() if line.strip()]
        record.message = visible(" | ".join(lines))
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return conninfo.redact(super().formatException(ei))


def configure(log_format: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RootChatterFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that says nothing to an operator at INFO.
    for noisy in ("alembic.runtime.plugins", "httpx", "httpx2", "huggingface_hub", "hf_xet"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
