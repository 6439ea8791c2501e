"""What engine servers and their clients agree on over Arrow Flight.

- Data: ``DoExchange`` with an empty command descriptor. The client writes request batches
  (:func:`ai_query.engine.core.batch.request_batch`; the call options travel in the schema metadata,
  so one stream carries one call), then ends its side; the server answers each request batch
  with one result batch, in order. Several batches per stream are in flight together.
- Preview: ``DoExchange`` with the command ``ai_query.preview/v1``: the same request batches,
  each answered with its preview (:mod:`ai_query.engine.core.preview`: prompt tokens and
  cache hits, no model call).
- Actions: ``healthcheck`` (JSON status and counters) and ``catalog`` (the catalog as JSON,
  plaintext keys removed).
- Auth: ``authorization: Bearer <token>`` on every call when the server has tokens.
- Errors: an :class:`ai_query.errors.AIQueryError` raised by the engine crosses the wire as a
  Flight error whose ``extra_info`` is JSON naming the class, so the client raises the same
  class with the same message (:func:`error_to_flight` / :func:`error_from_flight`).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow.flight as flight

from ai_query import errors as _errors
from ai_query.errors import (
    AIQueryError,
    EngineDeadError,
    EngineError,
    EngineUnavailableError,
    RateLimitExceededError,
)
from ai_query.redaction import redact, redact_exception

EXCHANGE_COMMAND = b"ai_query.exchange/v1"
PREVIEW_COMMAND = b"ai_query.preview/v1"
ACTION_HEALTH = "healthcheck"
ACTION_CATALOG = "catalog"
ACTIONS: dict[str, str] = {
    ACTION_HEALTH: "Server status, endpoints and counters (JSON).",
    ACTION_CATALOG: "The endpoint catalog (JSON, plaintext keys removed).",
}
AUTH_HEADER = "authorization"
_ERROR_KEY = "ai_query_error"


def bearer_header(token: str) -> tuple[bytes, bytes]:
    """The header a client sends to authenticate with ``token``."""
    return (AUTH_HEADER.encode(), f"Bearer {token}".encode())


def is_retryable(exc: BaseException) -> bool:
    """Whether another server, or the same one later, may answer what failed with ``exc``."""
    return isinstance(exc, (EngineUnavailableError, EngineDeadError, RateLimitExceededError))


def error_to_flight(exc: BaseException) -> flight.FlightError:
    """The Flight error that carries ``exc`` to the client.

    Retryable errors (:func:`is_retryable`) become ``FlightUnavailableError``: the client
    retries them, after ``retry_after`` seconds when the error has that attribute (a rate
    limit). Others become
    ``FlightServerError``. Anything that is not an :class:`AIQueryError` travels as an
    :class:`EngineError` with the original message. Secrets are masked in both.
    """
    if not isinstance(exc, AIQueryError):
        exc = EngineError(f"engine server error: {type(exc).__name__}: {exc}")
    redact_exception(exc)  # the redaction boundary of Flight (see ai_query.redaction)
    simple = (str, int, float, bool, list, type(None))
    attrs = {
        k: redact(v) if isinstance(v, str) else v
        for k, v in vars(exc).items()
        if isinstance(v, simple)
    }
    info = {_ERROR_KEY: type(exc).__name__, "message": str(exc), "attrs": attrs}
    extra = json.dumps(info).encode()
    message = f"{type(exc).__name__}: {exc}"
    if is_retryable(exc):
        return flight.FlightUnavailableError(message, extra_info=extra)
    return flight.FlightServerError(message, extra_info=extra)


def error_from_flight(exc: flight.FlightError) -> AIQueryError | None:
    """The ai_query error a server sent, rebuilt; None for a transport failure."""
    raw = getattr(exc, "extra_info", b"") or b""
    try:
        info: Any = json.loads(raw) if raw else None
    except ValueError:
        info = None
    if not isinstance(info, dict) or _ERROR_KEY not in info:
        return None
    cls = getattr(_errors, str(info[_ERROR_KEY]), None)
    if not (isinstance(cls, type) and issubclass(cls, AIQueryError)):
        cls = EngineError
    err = cls.__new__(cls)
    Exception.__init__(err, str(info.get("message", "")))
    attrs = info.get("attrs")
    if isinstance(attrs, dict):
        err.__dict__.update(attrs)
    return err
