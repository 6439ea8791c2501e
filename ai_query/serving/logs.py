"""Structured (JSON lines) logs for the server, with secret values scrubbed from every line.

Each request is one ``ai_query.http.access`` line with its id, endpoint, served entity,
principal, status, duration and token counts; request and response bodies are never logged
(the inference table holds them). :class:`Redactor` knows the resolved values of the secrets
the server uses and replaces them wherever they would appear.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

#: Fields of a log record that are not extra context.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
    "vllm_process_name",
}

access_log = logging.getLogger("ai_query.http.access")


class Redactor:
    """Replaces known secret values in text; thread-safe."""

    MASK = "[REDACTED]"
    """What a secret value becomes."""

    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        """Remember ``value`` as secret (values under 4 characters would mask too much)."""
        if value and len(value) >= 4:
            with self._lock:
                self._values = self._values | {value}

    def __call__(self, text: str) -> str:
        """``text`` with every known secret value masked."""
        for value in self._values:
            if value in text:
                text = text.replace(value, self.MASK)
        return text


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any extra fields."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redactor

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
        return self._redact(line) if self._redact is not None else line


def configure_logging(level: str = "info", redactor: Redactor | None = None) -> None:
    """Send ai_query's and uvicorn's logs to stderr as JSON lines (once per process)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter(redactor))
    handler.set_name("ai_query.http")
    for name in ("ai_query", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        if any(h.get_name() == "ai_query.http" for h in logger.handlers):
            continue
        logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)]
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False
