"""The server's Arrow Flight side: the engine transport of
:mod:`ai_query.engine.flight.server`, plus bearer tokens, endpoint permissions (CAN_QUERY) and
rate limits shared with the HTTP server."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from ai_query.engine.core.batch import CALL_METADATA_KEY, REQUEST_COLUMN
from ai_query.engine.core.budget import BudgetedEngine, read_budget_tag
from ai_query.engine.core.protocol import Engine
from ai_query.engine.flight.server import EngineFlightServer, result_total
from ai_query.engine.flight.wire import AUTH_HEADER
from ai_query.errors import AuthenticationError
from ai_query.options import CallOptions
from ai_query.serving.auth import ANONYMOUS_IDENTITY, TokenAuth
from ai_query.serving.budgets import EndpointBudgets, QueryBudgets
from ai_query.serving.permissions import Identity
from ai_query.serving.ratelimit import RateLimiter

log = logging.getLogger(__name__)

_AUTH = "auth"


class PrincipalMiddleware(flight.ServerMiddleware):
    """Remembers who made a call (the principal its bearer token stands for)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.principal = identity.name


class TokenAuthMiddlewareFactory(flight.ServerMiddlewareFactory):
    """Refuses every call without a bearer token that one of ``auths`` accepts."""

    def __init__(self, auths: Sequence[TokenAuth]) -> None:
        self._auths = list(auths)

    def start_call(self, info: Any, headers: Mapping[str, list[str]]) -> PrincipalMiddleware:
        """Check the ``authorization`` header; raise FlightUnauthenticatedError without a match."""
        values: list[str | None] = [*headers.get(AUTH_HEADER, [])] or [None]
        problem = "a bearer token is required"
        for auth in self._auths:
            for value in values:
                try:
                    return PrincipalMiddleware(auth.identify_header(value))
                except AuthenticationError as exc:
                    problem = str(exc)
        raise flight.FlightUnauthenticatedError(problem)


class ServingFlightServer(EngineFlightServer):
    """The engine server's Flight side: bearer tokens, endpoint permissions and rate limits,
    shared with the HTTP server.

    Args:
        engine: the engine answering request batches (thread-safe ``run``).
        location: ``grpc://host:port`` to bind (port 0: any free port).
        auth: bearer tokens; every call must present one that one of them accepts. None or
            empty: auth off.
        limiter: endpoint rate limits: a batch waits until its rows are admitted. None: none.
        budgets: endpoint budgets: rows that do not fit carry the budget error. None: none.
        **kwargs: see :class:`~ai_query.engine.flight.server.EngineFlightServer`.
    """

    def __init__(
        self,
        engine: Engine,
        location: str = "grpc://127.0.0.1:0",
        *,
        auth: Sequence[TokenAuth] | None = None,
        limiter: RateLimiter | None = None,
        budgets: EndpointBudgets | None = None,
        **kwargs: Any,
    ) -> None:
        auths = [a for a in auth or () if a.enabled]
        middleware = {_AUTH: TokenAuthMiddlewareFactory(auths)} if auths else None
        super().__init__(engine, location, middleware=middleware, **kwargs)
        self.limiter = limiter
        self.budgets = budgets
        """The endpoints' budgets (shared with the HTTP side); None: none held."""
        self.query_budgets = QueryBudgets()
        """The budgets that queries carry on their batches."""
        self.auth_required = bool(auths)
        self.authorize: Callable[[Identity, str], None] | None = None
        """Raises PermissionDeniedError unless the caller may query the endpoint named (set
        by the server to the HTTP side's endpoint permissions); None: every endpoint of the
        catalog may be queried by every caller, as its permissions say."""

    def caller(self, context: Any) -> Identity:
        """The identity the call's bearer token stands for (anonymous with auth off)."""
        middleware = context.get_middleware(_AUTH)
        return middleware.identity if middleware is not None else ANONYMOUS_IDENTITY

    def _authorized(self, batch: pa.RecordBatch, caller: Identity) -> str | None:
        """The endpoint ``batch`` names, once ``caller`` may query it (CAN_QUERY)."""
        meta = (batch.schema.metadata or {}).get(CALL_METADATA_KEY)
        name = CallOptions.from_json(meta).endpoint if meta is not None else None
        if name is not None and self.authorize is not None:
            self.authorize(caller, name)
        return name

    def _preview_batch(self, batch: pa.RecordBatch, caller: Identity) -> pa.RecordBatch:
        self._authorized(batch, caller)
        return super()._preview_batch(batch, caller)

    def _run_batch(self, batch: pa.RecordBatch, caller: Identity) -> pa.RecordBatch:
        endpoint = None
        name = self._authorized(batch, caller)  # before any row runs
        if name is not None and (self.limiter is not None or self.budgets is not None):
            endpoint = self.engine.catalog.get(name)
        engine: Engine = self.engine
        if endpoint is not None and self.budgets is not None:
            allowance = self.budgets.allowance(endpoint, caller.name)
            if allowance is not None:  # the server's budget holds whatever the client sets
                engine = BudgetedEngine(self.engine, allowance)
        tagged = read_budget_tag(batch)
        if tagged is not None:  # the query's own budget, over all the processes sending it
            engine = BudgetedEngine(engine, self.query_budgets.allowance(caller.name, *tagged))
        if endpoint is None or not endpoint.rate_limits or self.limiter is None:
            return engine.run(batch)
        # Throttle rather than fail: the rows wait until the endpoint's limits admit them.
        rows = batch.num_rows - batch.column(REQUEST_COLUMN).null_count
        self.limiter.wait(endpoint, caller.name, rows)
        result = engine.run(batch)
        used = result_total(result, "prompt_tokens") + result_total(result, "completion_tokens")
        self.limiter.record_tokens(endpoint, caller.name, used)
        return result
