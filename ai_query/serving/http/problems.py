"""HTTP error answers, in the shape each API's clients expect.

Databricks routes answer ``{"error_code": "INVALID_PARAMETER_VALUE", "message": ...}``; the
OpenAI-compatible ``/v1`` routes answer ``{"error": {"message", "type", "code"}}`` (what the
``openai`` client reads). One exception type, :class:`APIError`, carries status, code, message
and headers (``Retry-After``) to the handler that renders it.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ai_query.errors import (
    AuthenticationError,
    ConfigError,
    EngineDeadError,
    EngineError,
    ModelNotAvailableError,
    RateLimitExceededError,
    UnknownEndpointError,
)

#: Databricks error codes by HTTP status, for errors raised without one.
_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "TEMPORARILY_UNAVAILABLE",
}

#: OpenAI error ``type`` by HTTP status.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error answer: HTTP status, Databricks error code, message and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code or _CODES.get(status, "INTERNAL_ERROR")
        self.message = message
        self.headers = headers or {}
        self.logged = False
        """True once the access log has a line for this error."""
        super().__init__(message)


def bad_request(message: str) -> APIError:
    """A 400 ``INVALID_PARAMETER_VALUE``."""
    return APIError(400, message)


def not_found(name: str) -> APIError:
    """A 404 for an endpoint that does not exist."""
    return APIError(404, f"endpoint {name!r} does not exist")


def rate_limited(retry_after: float, message: str) -> APIError:
    """A 429 with ``Retry-After`` in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(retry_after))
    return APIError(429, message, headers={"Retry-After": str(seconds)})


def from_exception(exc: BaseException, *, external: bool = False) -> APIError:
    """The API error for an exception raised while serving a request.

    Args:
        exc: what was raised.
        external: the request went to an external provider (its failures are 502s).
    """
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, AuthenticationError):
        return APIError(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, RateLimitExceededError):
        return rate_limited(exc.retry_after, str(exc))
    if isinstance(exc, UnknownEndpointError):
        return APIError(404, str(exc))
    if isinstance(exc, (ConfigError, ModelNotAvailableError)):
        return APIError(400, str(exc))
    if isinstance(exc, EngineDeadError):
        return APIError(503, str(exc))
    if isinstance(exc, EngineError):
        return APIError(500, str(exc))
    message = str(exc) or type(exc).__name__
    return APIError(502 if external else 400, message)


def render(request: Request, error: APIError, redact: Any = None) -> JSONResponse:
    """The JSON answer for ``error``, shaped for the API the request was made to."""
    message = redact(error.message) if redact is not None else error.message
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
