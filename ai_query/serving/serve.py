"""The engine server process: build the engine, serve it over Flight (and HTTP), stop cleanly.

``ai-query serve`` (the one launcher: :mod:`ai_query.engine.process.launcher` runs it too) calls
:func:`run_server_cli`; :func:`serve` is the same for Python callers; :func:`start_server`
starts one without blocking (tests, embedding).

SIGTERM or SIGINT stops the server gracefully: no new calls are taken, in-flight batches
finish, then the models shut down. A second signal exits at once.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ai_query.catalog import Catalog, Endpoint
from ai_query.config import settings
from ai_query.engine.core.batch import request_batch
from ai_query.engine.core.protocol import Engine
from ai_query.engine.process.lifeline import (
    ReadyReport,
    report_ready,
    start_reaper,
    watch_lifeline,
)
from ai_query.engine.spec import in_process_engine, load_engine_factory
from ai_query.errors import ConfigError, UnknownEndpointError
from ai_query.options import CallOptions, ModelParameters
from ai_query.serving.auth import TokenAuth
from ai_query.serving.budgets import EndpointBudgets
from ai_query.serving.flight import ServingFlightServer
from ai_query.serving.logs import configure_logging
from ai_query.serving.options import ServeOptions
from ai_query.serving.permissions import ADMINS
from ai_query.serving.ratelimit import RateLimiter
from ai_query.tasks import Task
from ai_query.timings import mark

if TYPE_CHECKING:
    from ai_query.serving.http.ui_routes import UIServices

log = logging.getLogger("ai_query.server")



@dataclass
class RunningServer:
    """A started engine server (Flight, and HTTP when asked)."""

    flight: ServingFlightServer
    """The Flight server."""
    engine: Engine
    """The engine it serves."""
    stop_http: Callable[[], None] | None = None
    """Stops the HTTP server, when one runs."""
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        """The Flight address, ``grpc://host:port``."""
        return self.flight.url

    def stop(self) -> None:
        """Graceful stop: refuse new calls, let in-flight batches finish, close the engine."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.stop_http is not None:
            self.stop_http()
        self.flight.shutdown()
        self.engine.close()
        from ai_query.engine.backends.registry import close_backends

        close_backends()


def build_server_engine(options: ServeOptions, catalog: Catalog) -> Engine:
    """The engine a server hosts: its ``engine_factory``'s, else the in-process engine of its
    ``engine`` kind (vLLM or the deterministic backend).

    Raises:
        ConfigError: for a factory that cannot be loaded.
    """
    if options.engine_factory is not None:
        return load_engine_factory(options.engine_factory)(catalog)
    return in_process_engine(catalog, options.engine)


def local_endpoints(catalog: Catalog) -> list[str]:
    """The endpoints whose every served entity runs here (none calls a provider)."""
    return [ep.name for ep in catalog.endpoints() if _serves_locally(ep)]


def _serves_locally(endpoint: Endpoint) -> bool:
    return all(e.external_model is None for e in endpoint.config.served_entities)


def warm_up(engine: Engine, endpoints: Sequence[str] | None = None) -> None:
    """Run one tiny request on each named endpoint (default: every local one) so models load.

    External endpoints are skipped unless named (warming them would call the provider).
    """
    catalog = engine.catalog
    for name in local_endpoints(catalog) if endpoints is None else endpoints:
        params = ModelParameters() if catalog.task_of(name) == Task.EMBEDDINGS else (
            ModelParameters(max_tokens=1)
        )
        log.info("warming up endpoint %s", name)
        engine.run(request_batch(["warm up"], CallOptions(endpoint=name, model_parameters=params)))


def warm_in_background(engine: Engine, endpoints: Sequence[str] | None = None) -> None:
    """:func:`warm_up` each local endpoint named (default: every one) on its own daemon thread;
    returns at once.

    An endpoint that calls a provider is never warmed (that would send the provider a request),
    nor a name the catalog does not know. A model that fails to start is logged; the rows that
    need it then fail as they would have.
    """
    catalog = engine.catalog
    names = local_endpoints(catalog) if endpoints is None else [
        n for n in endpoints if _runs_here(catalog, n)
    ]
    skipped = sorted(set(endpoints or ()) - set(names))
    if skipped:
        log.info("not warming %s: not a local model of this server", ", ".join(skipped))
    for name in names:
        threading.Thread(
            target=_warm_logged, args=(engine, name), name=f"aiq-warm-{name}", daemon=True
        ).start()


def _runs_here(catalog: Catalog, name: str) -> bool:
    """Whether ``name`` (an endpoint or an alias) is known and serves only local models."""
    try:
        return _serves_locally(catalog.get(name))
    except UnknownEndpointError:
        return False


def _warm_logged(engine: Engine, name: str) -> None:
    mark("server: warm", endpoint=name)
    try:
        warm_up(engine, [name])
    except Exception as exc:  # noqa: BLE001 - a background start has no caller to raise to
        log.warning("endpoint %s did not start in the background: %s", name, exc)


def check_exposure(options: ServeOptions) -> None:
    """Refuse to serve a non-loopback address with auth off, unless ``insecure`` says so.

    Raises:
        ConfigError: naming the address and the ways out.
    """
    if options.insecure or options.token or options.tokens_file is not None:
        return
    if not is_loopback(options.host):
        raise ConfigError(
            f"refusing to serve on {options.host} with auth off: give --tokens-file or set "
            "AI_QUERY_SERVER_TOKEN, bind 127.0.0.1, or pass --insecure to serve anyone"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def start_server(
    options: ServeOptions,
    *,
    engine: Engine | None = None,
    ui: UIServices | None = None,
) -> RunningServer:
    """Start an engine server (Flight, and HTTP unless ``options.http_port`` is None) and return
    at once.

    Args:
        options: how it runs.
        engine: serve this engine instead of building one from the catalog (tests).
        ui: what the web UI's SQL editor and Jobs page run on (default: neither).

    Raises:
        ConfigError: for a non-loopback address with auth off (see :func:`check_exposure`).
    """
    check_exposure(options)
    auths = [TokenAuth.from_file(options.tokens_file)]
    if options.token:
        auths.append(TokenAuth({options.token: {"principal": "admin", "groups": [ADMINS]}}))
    limiter = RateLimiter(period_scale=options.rate_limit_period_scale)
    budgets = EndpointBudgets(period_scale=options.rate_limit_period_scale)
    if engine is None:
        cat = Catalog.load(options.catalog) if options.catalog is not None else Catalog.default()
        engine = build_server_engine(options, cat)
    if options.preload:
        warm_up(engine, list(options.preload) if isinstance(options.preload, tuple) else None)
    server = ServingFlightServer(
        engine, f"grpc://{options.host}:{options.port}", auth=auths, limiter=limiter,
        budgets=budgets, description=options.engine_factory or options.engine,
    )
    running = RunningServer(server, engine)
    if options.http_port is not None:
        running.stop_http = _start_http(engine, options, auths, (limiter, budgets), server, ui)
    log.info(
        "ai_query engine server (%s) listening on %s; endpoints: %s; auth: %s",
        options.engine_factory or options.engine, server.url, ", ".join(engine.catalog.names()),
        "on" if server.auth_required else "off",
    )
    mark("server: listening")
    if options.lifeline_fd is not None:  # the launcher learns the ports here, not from the log
        report_ready(
            options.lifeline_fd,
            ReadyReport(flight_port=server.port, http_port=options.http_port),
        )
    if options.warm:
        warm_in_background(engine, list(options.warm) if isinstance(options.warm, tuple) else None)
    return running


def serve(
    options: ServeOptions,
    *,
    engine: Engine | None = None,
    stop_event: threading.Event | None = None,
    ui: UIServices | None = None,
) -> None:
    """Run an engine server until SIGTERM/SIGINT (or ``stop_event``), then stop gracefully.

    Args:
        options: how it runs.
        engine: serve this engine instead of building one from the catalog.
        stop_event: set it to stop the server (for callers not on the main thread).
        ui: see :func:`start_server`.
    """
    stop = stop_event or threading.Event()
    signals = _install_signal_handlers(stop)
    server = start_server(options, engine=engine, ui=ui)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, previous in signals.items():
            signal.signal(sig, previous)


def run_server_cli(
    options: ServeOptions, *, ui: UIServices | None = None
) -> None:
    """What ``ai-query serve`` runs: JSON logs on stderr (secrets masked by the process's
    redactor, :mod:`ai_query.redaction`), the lifeline and the reaper, then :func:`serve`
    until a signal."""
    check_exposure(options)  # before anything starts
    configure_logging(options.log_level.lower())
    if options.lifeline_fd is not None:
        watch_lifeline(options.lifeline_fd, options.private_dir)
    if options.runs_vllm:
        start_reaper()  # started before any engine, so it notes every engine process
    serve(options, ui=ui)


def _install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now")
            os._exit(1)
        log.info("received %s: finishing in-flight batches", signal.Signals(signum).name)
        stop.set()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handle)
    return previous


# --- HTTP ------------------------------------------------------------------------------------
# The HTTP API (OpenAI-compatible and Databricks routes) runs in this process beside Flight,
# sharing the engine, the bearer tokens, the rate limiter and the endpoint budgets.
def _start_http(
    engine: Engine,
    options: ServeOptions,
    auth: Sequence[TokenAuth],
    limits: tuple[RateLimiter, EndpointBudgets],
    flight_server: ServingFlightServer,
    ui: UIServices | None = None,
) -> Callable[[], None]:
    from ai_query.serving.http.app import create_app, start_http
    from ai_query.serving.http.ui_routes import UIServices

    database = options.database
    if database is None:
        database = settings().cache_dir / "serving" / "endpoints.sqlite"
        database.parent.mkdir(parents=True, exist_ok=True)
    ui = ui or UIServices()
    workspace = ui.sql_workspace(flight_server.url) if ui.sql_workspace is not None else None
    app = create_app(
        replace(options, database=database), engine=engine, auth=auth, limiter=limits[0],
        budgets=limits[1], sql_workspace=workspace, job_runs=ui.job_runs,
    )
    # Flight checks CAN_QUERY against the same endpoint permissions as HTTP.
    flight_server.authorize = app.state.ctx.serving.check_query
    thread = start_http(options, app=app)
    log.info("HTTP API listening on http://%s:%d", options.host, options.http_port)
    return thread.stop
