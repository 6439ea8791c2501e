"""The one redaction boundary: secret values this process knows are masked on every surface.

A secret value is a fact about the process, not about a request: once resolved it may turn up
in any text the process emits (a provider echoing its ``Authorization`` header in an error, an
exception's message, a log line). So there is one process-wide :class:`Redactor`, and every
value is added to it where it is resolved or read:

- :func:`ai_query.secrets.resolve_secret` adds each ``{{secrets/scope/key}}`` value it resolves;
- :class:`ai_query.catalog.OpenAIConfig` adds a plain-text key (``openai_api_key_plaintext``)
  when a catalog, endpoint body or stored endpoint is parsed.

Text leaves through :func:`redact` at these points, each once:

- the engine: row errors where they enter a result batch
  (:func:`ai_query.engine.core.batch.result_batch`; DuckDB's and Spark's ``errorMessage``,
  ``failOnError`` exceptions and jobs' errors tables come from there), engine errors leaving
  :class:`~ai_query.engine.local.LocalEngine`, and errors crossing Flight
  (:func:`ai_query.engine.flight.wire.error_to_flight`);
- the server: HTTP error bodies (:func:`ai_query.serving.http.problems.render`), the inference
  table writer and the JSON log formatter (:mod:`ai_query.serving.logs`).

Errors are produced in the engine process (in ``ai_query.connect()`` a private child), which is
the process that resolved the key, so masking there covers the SQL surfaces of the caller.
"""

from __future__ import annotations

import json
import threading

#: What a secret value becomes.
MASK = "[REDACTED]"
#: Shorter values are not remembered: masking them would garble ordinary text.
MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces known secret values in text; thread-safe."""

    MASK = MASK
    """What a secret value becomes."""

    def __init__(self) -> None:
        self._values: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        """Remember ``value`` as secret (and its JSON-escaped form, as it appears in JSON)."""
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        forms = {value, json.dumps(value)[1:-1]}
        with self._lock:
            known = set(self._values) | forms
            # Longest first, so a secret that contains another is masked whole.
            self._values = tuple(sorted(known, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        """``text`` with every known secret value masked."""
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text


#: The process's redactor (see the module docstring).
REDACTOR = Redactor()


def remember_secret(value: str | None) -> None:
    """Add ``value`` to the process's secrets (to be masked wherever it would appear)."""
    REDACTOR.add(value)


def redact(text: str) -> str:
    """``text`` with every secret this process knows masked as ``[REDACTED]``."""
    return REDACTOR(text)


def redact_exception(exc: BaseException) -> BaseException:
    """Mask secrets in ``exc``'s message (its string ``args``), in place; returns ``exc``."""
    args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
    if args != exc.args:
        exc.args = args
    return exc
