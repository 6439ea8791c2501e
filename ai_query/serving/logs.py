"""Structured (JSON lines) logs for the server, with secret values scrubbed from every line.

Each request is one ``ai_query.http.access`` line with its id, endpoint, served entity,
principal, status, duration and token counts; request and response bodies are never logged
(the inference table holds them). Every line passes the process's redactor
(:mod:`ai_query.redaction`), which masks the values of the secrets the process uses.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ai_query.redaction import REDACTOR, Redactor

#: Fields of a log record that are not extra context.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
    "vllm_process_name",
}

access_log = logging.getLogger("ai_query.http.access")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any extra fields."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redactor or REDACTOR

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line, secrets masked."""
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        line = json.dumps(data, default=str)
        return self._redact(line)


def configure_logging(level: str = "info") -> None:
    """Send ai_query's and uvicorn's logs to stderr as JSON lines, secrets masked (once per
    process). uvicorn's own access log stays off: ours logs paths without query strings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    handler.set_name("ai_query.http")
    for name in ("ai_query", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        if any(h.get_name() == "ai_query.http" for h in logger.handlers):
            continue
        logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)]
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False
