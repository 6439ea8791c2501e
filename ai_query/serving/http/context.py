"""What every route needs, held once per app (``app.state.ctx``)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from ai_query.errors import AuthenticationError
from ai_query.serving.auth import ANONYMOUS_IDENTITY, TokenAuth
from ai_query.serving.budgets import EndpointBudgets
from ai_query.serving.http.problems import APIError
from ai_query.serving.inference_table import InferenceTable
from ai_query.serving.metrics import ServerMetrics
from ai_query.serving.options import ServeOptions
from ai_query.serving.permissions import Identity
from ai_query.serving.ratelimit import RateLimiter
from ai_query.serving.state import ServingState

if TYPE_CHECKING:
    from ai_query.serving.http.sql_sessions import SQLSessions


@dataclass
class ServerContext:
    """The server's shared parts."""

    options: ServeOptions
    """How the server runs."""
    serving: ServingState
    """Endpoints, deployments and backends."""
    auth: tuple[TokenAuth, ...]
    """Bearer tokens (shared with the Flight server); a token any of them accepts is valid."""
    limiter: RateLimiter
    """Rate limits (shared with the Flight server)."""
    budgets: EndpointBudgets
    """Endpoint budgets (shared with the Flight server)."""
    metrics: ServerMetrics
    """Prometheus metrics."""
    table: InferenceTable | None = None
    """The inference table, when one is configured."""
    rng: random.Random = field(default_factory=random.Random)
    """Draws the served entity of each request (traffic split)."""
    sql: SQLSessions | None = None
    """The web UI's SQL editor, when the launcher gave the app a workspace."""
    job_runs: Callable[[], list[dict[str, Any]]] | None = None
    """The jobs directory's runs, for the UI's Jobs page (None: no jobs directory)."""
    owns_models: bool = False
    """Shut the process's model backends down when the app stops (an app serving alone;
    beside Flight, the process closes them)."""


def get_context(request: Request) -> ServerContext:
    """The context of the app serving ``request``."""
    ctx: ServerContext = request.app.state.ctx
    return ctx


def get_identity(request: Request) -> Identity:
    """The authenticated caller of ``request``, with its groups (a FastAPI dependency).

    With auth off the caller is :data:`~ai_query.serving.auth.ANONYMOUS_IDENTITY`.

    Raises:
        APIError: 401 when auth is on and the bearer token is missing or not valid.
    """
    auths = [a for a in get_context(request).auth if a.enabled]
    if not auths:
        return ANONYMOUS_IDENTITY
    header = request.headers.get("authorization")
    problem = "a bearer token is required"
    for auth in auths:
        try:
            return auth.identify_header(header)
        except AuthenticationError as exc:
            problem = str(exc)
    raise APIError(401, problem, headers={"WWW-Authenticate": "Bearer"})


def get_principal(caller: Annotated[Identity, Depends(get_identity)]) -> str:
    """The authenticated principal's name (a FastAPI dependency; see :func:`get_identity`)."""
    return caller.name


#: Route parameter types: the app's context, the authenticated caller and its name.
Ctx = Annotated[ServerContext, Depends(get_context)]
Caller = Annotated[Identity, Depends(get_identity)]
Principal = Annotated[str, Depends(get_principal)]
