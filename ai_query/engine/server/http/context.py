"""What every route needs, held once per app (``app.state.ctx``)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from fastapi import Request

from ai_query.engine.server.auth import TokenAuth
from ai_query.engine.server.http.inference_table import InferenceTable
from ai_query.engine.server.http.metrics import ServerMetrics
from ai_query.engine.server.http.options import HTTPOptions
from ai_query.engine.server.http.service import ServingState
from ai_query.engine.server.ratelimit import RateLimiter


@dataclass
class ServerContext:
    """The server's shared parts."""

    options: HTTPOptions
    """How the server runs."""
    serving: ServingState
    """Endpoints, deployments and backends."""
    auth: TokenAuth
    """Bearer tokens (shared with the Flight server)."""
    limiter: RateLimiter
    """Rate limits (shared with the Flight server)."""
    metrics: ServerMetrics
    """Prometheus metrics."""
    table: InferenceTable | None = None
    """The inference table, when one is configured."""
    rng: random.Random = field(default_factory=random.Random)
    """Draws the served entity of each request (traffic split)."""


def get_context(request: Request) -> ServerContext:
    """The context of the app serving ``request``."""
    ctx: ServerContext = request.app.state.ctx
    return ctx
