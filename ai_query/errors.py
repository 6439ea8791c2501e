"""The one exception hierarchy of ai_query.

Every error the package raises on purpose is an :class:`AIQueryError`::

    AIQueryError
    ├─ ConfigError (also ValueError)        bad catalog, unknown endpoint, bad modelParameters
    │  └─ UnknownEndpointError              endpoint name not in the catalog
    ├─ ModelNotAvailableError               a bundled model's package is missing
    ├─ SQLError
    │  ├─ SQLParseError(line, col)          SQL or a returnType DDL string that does not parse
    │  └─ UnsupportedCallError              an ai_query(...) call with a bad argument shape
    ├─ EngineError
    │  ├─ EngineUnavailableError            no engine/server could be reached (retryable)
    │  ├─ EngineDeadError                   the engine failed and cannot recover
    │  ├─ RowAlignmentError                 a result batch misses or repeats a row
    │  └─ RowError(row_index)               one row failed under failOnError => true
    ├─ RowFailure                           one request failed; its text is the row's errorMessage
    │  └─ ProviderError                     an external model's provider refused or failed it
    ├─ AuthenticationError                  no valid bearer token for an engine server
    ├─ PermissionDeniedError                the principal lacks a permission it needs
    ├─ ResourceNotFoundError                a serving endpoint (or its id) does not exist
    ├─ ResourceConflictError(code)          the name is taken, or an update is running
    ├─ RateLimitExceededError(retry_after)  an endpoint's rate limit is used up for now
    ├─ BudgetExceededError                  a query's estimate is over its budget
    ├─ JobError                             a batch job file or run failed
    │  └─ JobLockedError                    another run of the same job holds its lock
    ├─ WorkspaceError                       the SQL editor's locked workspace refused something
    │  ├─ StatementNotAllowedError          a statement kind the editor does not run
    │  ├─ UploadRejectedError               an uploaded table is unreadable or over a quota
    │  └─ QueryLimitError                   a query ran past its time, memory or result bound
    └─ APIError(status) (serving.http.problems)  an HTTP error answer, raised in a route and
                                                 rendered by the app's handler (never escapes it)

Third-party errors are translated once, at the boundary, with ``raise ... from exc``. Only the
HTTP layer (:func:`ai_query.serving.http.problems.from_exception`) maps these types to status
codes; anything else that reaches it is unexpected: a 500 naming the request's id.
"""

from __future__ import annotations


class AIQueryError(Exception):
    """Base class of every error ai_query raises on purpose."""


class ConfigError(AIQueryError, ValueError):
    """A configuration value (catalog, parameter, option) is invalid."""


class UnknownEndpointError(ConfigError):
    """An ai_query call names an endpoint that the catalog does not hold."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"unknown endpoint {name!r}; known endpoints: {', '.join(self.known) or '(none)'}"
        )


class ModelNotAvailableError(AIQueryError):
    """A bundled model cannot be prepared (its package is missing or broken)."""


class SQLError(AIQueryError):
    """A problem with SQL text or an ai_query call in it."""


class SQLParseError(SQLError):
    """SQL text or a DDL type string does not parse."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None) -> None:
        self.line = line
        self.col = col
        where = f" (line {line}, col {col})" if line is not None else ""
        super().__init__(f"{message}{where}")


class UnsupportedCallError(SQLError, ValueError):
    """An ai_query(...) call has arguments of the wrong shape."""


class EngineError(AIQueryError):
    """The inference engine could not answer a batch."""


class EngineUnavailableError(EngineError):
    """No engine could be reached; retrying later may help."""


class EngineDeadError(EngineError):
    """The engine failed in a way it cannot recover from."""


class RowAlignmentError(EngineError):
    """A result batch does not hold exactly one result per request row."""


class RowError(EngineError):
    """A row failed and the call asked to fail on error."""

    def __init__(self, message: str, row_index: int, endpoint: str) -> None:
        self.row_index = row_index
        self.endpoint = endpoint
        self.cause = message
        super().__init__(f"ai_query endpoint {endpoint!r} failed on row {row_index}: {message}")


class RowFailure(AIQueryError):
    """One request failed; the message is what the user sees in ``errorMessage``.

    A backend raises it for one row (a prompt too long, a request vLLM refused); the engine
    turns it into that row's error, and the HTTP layer into a 400. Not an :class:`EngineError`:
    the engine still answers the other rows.
    """


class ProviderError(RowFailure):
    """An external model's provider refused or failed a request (the HTTP layer: a 502)."""


class AuthenticationError(AIQueryError):
    """A request to an engine server carries no valid bearer token."""


class PermissionDeniedError(AIQueryError):
    """The caller is known but may not do this (an endpoint permission, scope or API base)."""


class ResourceNotFoundError(AIQueryError):
    """A serving endpoint (or another resource named in a request) does not exist."""


class ResourceConflictError(AIQueryError):
    """The request conflicts with the resource's state (``code``: Databricks' error code)."""

    def __init__(self, message: str, code: str = "RESOURCE_CONFLICT") -> None:
        self.code = code
        super().__init__(message)


class RateLimitExceededError(AIQueryError):
    """An endpoint's rate limit is used up; retrying after ``retry_after`` seconds may succeed."""

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class BudgetExceededError(AIQueryError):
    """A query's estimate is over its budget (refused before any row is sent), or the budget
    ran out while it ran and it asked to fail on error."""


class JobError(AIQueryError):
    """A batch job file is invalid or its run failed."""


class JobLockedError(JobError):
    """Another run of the same job is in progress (it holds the job's lock)."""


class WorkspaceError(AIQueryError):
    """The SQL editor's locked workspace refused a query or an upload."""


class StatementNotAllowedError(WorkspaceError):
    """A statement of a kind the SQL editor does not run (it runs queries, not commands)."""


class UploadRejectedError(WorkspaceError):
    """An uploaded table file cannot be read, or storing it would break the caller's quota."""


class QueryLimitError(WorkspaceError):
    """A query ran past the editor's bounds: its time, memory, temp space or result size."""
