"""The HTTP server: a FastAPI app, run by uvicorn next to the Flight server.

:func:`create_app` builds the app; :func:`start_http` serves it from a background thread (the
Flight server keeps the main thread; see :mod:`ai_query.serving.serve`). To share auth, rate
limits and the endpoints with Flight, pass the same :class:`~ai_query.serving.auth.TokenAuth`
and :class:`~ai_query.serving.ratelimit.RateLimiter` to :func:`create_app`."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ai_query.catalog import Catalog
from ai_query.engine.backends.registry import BackendFactory, close_backends
from ai_query.engine.core.protocol import Engine
from ai_query.engine.spec import backend_factory_for
from ai_query.errors import AIQueryError, ConfigError
from ai_query.redaction import redact
from ai_query.serving.auth import TokenAuth
from ai_query.serving.budgets import EndpointBudgets
from ai_query.serving.http import databricks_routes, management, openai_routes, permissions_routes
from ai_query.serving.http.context import Ctx, Principal, ServerContext
from ai_query.serving.http.guard import RequestGuard
from ai_query.serving.http.headers import SecurityHeaders
from ai_query.serving.http.problems import APIError, from_exception, internal_error, render
from ai_query.serving.http.sql_sessions import SQLSessions, SQLWorkspace
from ai_query.serving.http.ui_routes import add_ui
from ai_query.serving.inference_table import InferenceTable
from ai_query.serving.logs import access_log
from ai_query.serving.metrics import ServerMetrics
from ai_query.serving.options import ServeOptions
from ai_query.serving.permissions import ExternalPolicy, external_bases
from ai_query.serving.ratelimit import RateLimiter
from ai_query.serving.state import ServingState
from ai_query.serving.store import EndpointStore

log = logging.getLogger(__name__)


def serving_catalog(catalog: Catalog | None) -> Catalog:
    """The server's own endpoints: the bundled defaults plus ``catalog`` (which wins)."""
    base = Catalog.default()
    if catalog is None:
        return base
    names = {e.name for e in catalog.endpoints()}
    endpoints = [e for e in base.endpoints() if e.name not in names] + catalog.endpoints()
    aliases = {a: t for a, t in base.aliases().items() if a not in names}
    return Catalog(endpoints, {**aliases, **catalog.aliases()})


def create_app(
    options: ServeOptions | None = None,
    *,
    catalog: Catalog | None = None,
    engine: Engine | None = None,
    auth: TokenAuth | Sequence[TokenAuth] | None = None,
    limiter: RateLimiter | None = None,
    budgets: EndpointBudgets | None = None,
    backend_factory: BackendFactory | None = None,
    sql_workspace: SQLWorkspace | None = None,
    job_runs: Callable[[], list[dict[str, Any]]] | None = None,
    **overrides: Any,
) -> FastAPI:
    """Build the HTTP server's app.

    Args:
        options: how the server runs (database, tokens file, inference table, engine...).
        catalog: the server's catalog file endpoints; the bundled defaults are always added.
            Default: ``engine.catalog`` when an engine is given.
        engine: the engine the Flight server in this process serves. Its backends are shared
            (same backend factory), and its ``catalog`` is kept equal to the served endpoints,
            so SQL sees endpoints created over HTTP (and their rate limits).
        auth: bearer tokens to share with Flight; a token any of them accepts is valid
            (default: from ``options.tokens_file``).
        limiter: rate limiter to share with Flight (default: a new one).
        budgets: endpoint budgets to share with Flight (default: new ones).
        backend_factory: builds model backends (default: the engine's, else by
            ``options.engine``).
        sql_workspace: runs the web UI's SQL editor (default: none, the editor is off).
        job_runs: the jobs directory's runs, for the UI's Jobs page (default: no page).
        **overrides: :class:`~ai_query.serving.options.ServeOptions` fields that replace those
            of ``options``.

    Returns:
        The app; ``app.state.ctx`` is its :class:`ServerContext`.
    """
    options = replace(options or ServeOptions(), **_normalise(overrides))
    factory = backend_factory_for(options.engine)
    if backend_factory is not None:
        factory = backend_factory
    elif engine is not None and hasattr(engine, "backend_factory"):
        factory = engine.backend_factory  # the Flight engine's own (None: vLLM)
    if engine is not None and catalog is None:
        catalog = engine.catalog
    metrics = ServerMetrics()
    serving = ServingState(
        serving_catalog(catalog),
        EndpointStore(options.database),
        backend_factory=factory,
        check_models=factory is None,
        external_policy=_external_policy(options, catalog),
    )
    if engine is not None and hasattr(engine, "catalog"):
        serving.subscribe(lambda served: setattr(engine, "catalog", served))
    if auth is None:
        auths: tuple[TokenAuth, ...] = (TokenAuth.from_file(options.tokens_file),)
    elif isinstance(auth, TokenAuth):
        auths = (auth,)
    else:
        auths = tuple(auth)
    table = None
    if options.inference_table is not None:
        table = InferenceTable(
            options.inference_table,
            metrics=metrics,
            flush_seconds=options.inference_flush_seconds,
            max_queue=options.inference_queue_size,
        )
    ctx = ServerContext(
        options=options,
        serving=serving,
        auth=auths,
        limiter=limiter or RateLimiter(period_scale=options.rate_limit_period_scale),
        budgets=budgets or EndpointBudgets(period_scale=options.rate_limit_period_scale),
        metrics=metrics,
        table=table,
        sql=SQLSessions(sql_workspace) if sql_workspace is not None else None,
        job_runs=job_runs,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if table is not None:
            await table.start()
        await serving.start()
        log.info("HTTP server ready", extra={"host": options.host, "port": options.http_port})
        try:
            yield
        finally:
            await serving.stop()
            if table is not None:
                await table.stop()
            serving.store.close()
            if ctx.sql is not None:
                ctx.sql.close()
            if ctx.owns_models:  # else the process (Flight) closes them after its own drain
                await asyncio.to_thread(close_backends)

    app = FastAPI(title="ai_query serving endpoints", lifespan=lifespan, docs_url=None)
    app.state.ctx = ctx
    app.include_router(openai_routes.router)
    app.include_router(databricks_routes.router)
    app.include_router(management.router)
    app.include_router(permissions_routes.router)
    _add_operations(app)
    add_ui(app)
    _add_error_handlers(app)
    app.add_middleware(RequestGuard, max_body_bytes=options.max_body_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: the guard's refusals carry them too
    return app


def _external_policy(options: ServeOptions, catalog: Catalog | None) -> ExternalPolicy:
    """API bases allowed to non-admins: ``--allow-external-base`` and the catalog file's own."""
    own = external_bases(catalog.endpoints()) if catalog is not None else set()
    return ExternalPolicy.of([*options.allow_external_bases, *own])


def _normalise(overrides: dict[str, Any]) -> dict[str, Any]:
    """Option overrides with paths as :class:`~pathlib.Path` (callers pass strings too)."""
    out = dict(overrides)
    for key in ("database", "tokens_file", "inference_table"):
        if out.get(key) is not None:
            out[key] = Path(out[key])
    return out


def _add_operations(app: FastAPI) -> None:
    @app.get("/health", tags=["operations"])
    async def health(ctx: Ctx) -> JSONResponse:
        """Each endpoint's readiness and engine state (no auth: for probes).

        200 while every engine answers; 503 while an engine of an endpoint is dead, restarting
        or failed (an endpoint whose new config is still deploying shows ``NOT_READY`` in
        ``endpoints`` without failing the probe).
        """
        records = ctx.serving.records()
        ready = {r.name: ctx.serving.readiness(r) for r in records}
        engines = {}
        for record in records:
            found = ctx.serving.endpoint_health(record)
            if found is not None:
                engines[record.name] = found
        ok = all(h.state.ready for h in engines.values())
        body = {
            "status": "ok" if ok else "not_ready",
            "endpoints": ready,
            "engines": {name: h.to_data() for name, h in engines.items()},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"])
    async def metrics(
        principal: Principal, ctx: Ctx
    ) -> Response:
        """Prometheus metrics."""
        if ctx.table is not None:
            ctx.metrics.table_queue.set(ctx.table.queue_depth)
        for record in ctx.serving.records():
            found = ctx.serving.endpoint_health(record)
            if found is not None:
                ctx.metrics.engine_state(record.name, found)
        return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        if not exc.logged:  # queries log their own line; this covers auth and management
            access_log.info(
                "%s %s -> %d: %s",
                request.method,
                request.url.path,
                exc.status,
                redact(exc.message),
                extra={"path": request.url.path, "status": exc.status},
            )
        return render(request, exc)

    @app.exception_handler(AIQueryError)
    async def domain_error(request: Request, exc: AIQueryError) -> JSONResponse:
        """Domain errors become status codes here, and only here (see ``from_exception``)."""
        return await api_error(request, from_exception(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return render(request, APIError(400, str(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return render(request, APIError(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return render(request, internal_error(exc))


class HTTPServerThread:
    """The HTTP server running in a background thread (see :func:`start_http`)."""

    def __init__(self, app: FastAPI, options: ServeOptions) -> None:
        import uvicorn

        if options.http_port is None:
            raise ConfigError("no HTTP port in these options (HTTP is off)")
        config = uvicorn.Config(
            app,
            host=options.host,
            port=options.http_port,
            log_config=None,
            access_log=False,
            log_level=options.log_level.lower(),
            timeout_keep_alive=30,
        )
        self.server = uvicorn.Server(config)
        """The uvicorn server."""
        self.thread = threading.Thread(target=self.server.run, name="ai-query-http", daemon=True)
        """The thread serving."""

    def start(self, timeout: float = 60.0) -> HTTPServerThread:
        """Start serving; return once the socket listens.

        Raises:
            ConfigError: when the server did not start within ``timeout`` seconds (its
                port is taken, most likely).
        """
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError("the HTTP server did not start (is the port free?)")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout)


def start_http(options: ServeOptions, app: FastAPI) -> HTTPServerThread:
    """Serve ``app`` (from :func:`create_app`) from a background thread; the Flight server
    keeps the main thread. Returns the running server; call ``stop()`` to end it."""
    return HTTPServerThread(app, options).start()
