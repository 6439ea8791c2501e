"""HTTP error answers, in the shape each API's clients expect.

Databricks routes answer ``{"error_code": "INVALID_PARAMETER_VALUE", "message": ...}``; the
OpenAI-compatible ``/v1`` routes answer ``{"error": {"message", "type", "code"}}`` (what the
``openai`` client reads). One exception type, :class:`APIError` (in the tree of
:mod:`ai_query.errors`), carries status, code, message and headers (``Retry-After``) to the
handler that renders it; :func:`from_exception` is the one map from error types to statuses.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ai_query.errors import (
    AIQueryError,
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    EngineDeadError,
    EngineError,
    EngineUnavailableError,
    JobError,
    JobLockedError,
    ModelNotAvailableError,
    PermissionDeniedError,
    ProviderError,
    RateLimitExceededError,
    ResourceConflictError,
    ResourceNotFoundError,
    RowFailure,
    SQLError,
    UnknownEndpointError,
    WorkspaceError,
)
from ai_query.redaction import redact

log = logging.getLogger(__name__)

#: Databricks error codes by HTTP status, for errors raised without one.
_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "TEMPORARILY_UNAVAILABLE",
}

#: Domain errors that are the request's own mistake (a 400).
_CLIENT_ERRORS = (ConfigError, ModelNotAvailableError, SQLError, WorkspaceError)


#: OpenAI error ``type`` by HTTP status.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(AIQueryError):
    """An error answer: HTTP status, Databricks error code, message and extra headers (raised
    in a route, rendered by the app's handler; the one error type that knows HTTP)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code or error_code(status)
        self.message = message
        self.headers = headers or {}
        self.logged = False
        """True once the access log has a line for this error."""
        super().__init__(message)


def error_code(status: int) -> str:
    """The Databricks error code of an HTTP status, for an error raised without one (a client
    error never answers ``INTERNAL_ERROR``)."""
    return _CODES.get(status) or ("BAD_REQUEST" if 400 <= status < 500 else "INTERNAL_ERROR")


def bad_request(message: str) -> APIError:
    """A 400 ``INVALID_PARAMETER_VALUE``."""
    return APIError(400, message)


def rate_limited(retry_after: float, message: str) -> APIError:
    """A 429 with ``Retry-After`` in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(retry_after))
    return APIError(429, message, headers={"Retry-After": str(seconds)})


def from_exception(
    exc: BaseException, *, external: bool = False, request_id: str | None = None
) -> APIError:
    """The API error for an exception raised while serving a request.

    Domain errors map to their status by type, here and only here: the caller's mistakes
    (config, SQL, a refused upload) and refusals (auth, permission, rate limit, budget, not found,
    conflict) are 4xx; a request's own failure (:class:`~ai_query.errors.RowFailure`) is a 400,
    or a 502 when the external provider failed it (:class:`~ai_query.errors.ProviderError`, or
    any row failure of an ``external`` call); an engine that is down is a 503; the server's own
    failures (an engine error, a failed job) are 500s. Anything else is unexpected, a bug on any
    route, external models included: a 500 naming ``request_id``, logged with its traceback.

    Args:
        exc: what was raised.
        external: the request went to an external provider (its row failures are 502s).
        request_id: the request's id (default: a new one).
    """
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, AuthenticationError):
        return APIError(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, RateLimitExceededError):
        return rate_limited(exc.retry_after, str(exc))
    if isinstance(exc, PermissionDeniedError):
        return APIError(403, str(exc), code="PERMISSION_DENIED")
    if isinstance(exc, BudgetExceededError):  # OpenAI's insufficient_quota is a 429 as well
        return APIError(429, str(exc), code="RESOURCE_EXHAUSTED")
    if isinstance(exc, (UnknownEndpointError, ResourceNotFoundError)):
        return APIError(404, str(exc))
    if isinstance(exc, ResourceConflictError):
        return APIError(409, str(exc), code=exc.code)
    if isinstance(exc, JobLockedError):
        return APIError(409, str(exc))
    if isinstance(exc, _CLIENT_ERRORS):
        return APIError(400, str(exc))
    if isinstance(exc, RowFailure):
        if external or isinstance(exc, ProviderError):
            return APIError(502, str(exc) or type(exc).__name__)
        return APIError(400, str(exc) or type(exc).__name__)
    if isinstance(exc, (EngineDeadError, EngineUnavailableError)):
        return APIError(503, str(exc))
    if isinstance(exc, (EngineError, JobError)):  # the server failed, and says how
        return server_error(exc, request_id)
    return internal_error(exc, request_id)


def server_error(exc: AIQueryError, request_id: str | None = None) -> APIError:
    """A 500 for a domain error of the server's own (an engine's or a job's failure): its
    message, and the request id, which the log line names too."""
    request_id = request_id or uuid.uuid4().hex
    log.warning(
        "request %s failed: %s: %s", request_id, type(exc).__name__, exc,
        extra={"request_id": request_id},
    )
    return APIError(500, str(exc), headers={"x-request-id": request_id})


def internal_error(exc: BaseException, request_id: str | None = None) -> APIError:
    """A 500 for an unexpected ``exc``: logged with its traceback and the request id, which
    the answer names (never the exception's text)."""
    request_id = request_id or uuid.uuid4().hex
    log.error(
        "unexpected error (request id %s): %s: %s", request_id, type(exc).__name__, exc,
        exc_info=exc, extra={"request_id": request_id},
    )
    return APIError(
        500, f"internal error (request id {request_id})", headers={"x-request-id": request_id}
    )


def render(request: Request, error: APIError) -> JSONResponse:
    """The JSON answer for ``error``, shaped for the API the request was made to (secrets
    masked: the HTTP side of the redaction boundary, :mod:`ai_query.redaction`)."""
    message = redact(error.message)
    body: dict[str, Any]
    if request.url.path.startswith("/v1/"):
        body = {
            "error": {
                "message": message,
                "type": _OPENAI_TYPES.get(error.status, "server_error"),
                "param": None,
                "code": error.code,
            }
        }
    else:
        body = {"error_code": error.code, "message": message}
    return JSONResponse(body, status_code=error.status, headers=error.headers)
