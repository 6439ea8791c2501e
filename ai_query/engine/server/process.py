"""The engine server process: build the engine, serve it over Flight (and HTTP), stop cleanly.

``ai-query serve`` (the one launcher: :mod:`ai_query.engine.server.launcher` runs it too) calls
:func:`run_server_cli`; :func:`serve` is the same for Python callers; :func:`start_server`
starts one without blocking (tests, embedding).

SIGTERM or SIGINT stops the server gracefully: no new calls are taken, in-flight batches
finish, then the models shut down. A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai_query.catalog import Catalog
from ai_query.config import settings
from ai_query.engine.batch import request_batch
from ai_query.engine.lifeline import start_reaper, watch_lifeline
from ai_query.engine.protocol import Engine
from ai_query.engine.server.auth import TokenAuth
from ai_query.engine.server.flight import EngineFlightServer
from ai_query.engine.server.ratelimit import RateLimiter
from ai_query.errors import ConfigError
from ai_query.options import CallOptions, ModelParameters

log = logging.getLogger("ai_query.server")

DEFAULT_PORT = 8815
#: Engines a server can host: vLLM (the real one) and the test engines.
ENGINE_KINDS: tuple[str, ...] = ("local", "deterministic", "echo")


@dataclass
class RunningServer:
    """A started engine server (Flight, and HTTP when asked)."""

    flight: EngineFlightServer
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
        from ai_query.engine.registry import close_backends

        close_backends()


def build_server_engine(
    catalog: Catalog, kind: str = "local", *, batch_delay: float = 0.0
) -> Engine:
    """The engine a server hosts: ``local`` (vLLM), ``deterministic`` or ``echo`` (tests).

    Raises:
        ConfigError: for an unknown kind.
    """
    engine: Engine
    if kind == "local":
        from ai_query.engine.local import LocalEngine

        engine = LocalEngine(catalog)
    elif kind == "deterministic":
        from ai_query.engine.deterministic import DeterministicBackend
        from ai_query.engine.local import LocalEngine

        engine = LocalEngine(catalog, backend_factory=DeterministicBackend)
    elif kind == "echo":
        from ai_query.engine.server.diagnostics import EchoEngine

        engine = EchoEngine(catalog)
    else:
        raise ConfigError(f"unknown server engine {kind!r}; expected one of {ENGINE_KINDS}")
    if batch_delay > 0:
        from ai_query.engine.server.diagnostics import DelayedEngine

        engine = DelayedEngine(engine, batch_delay)
    return engine


def warm_up(engine: Engine, endpoints: Sequence[str] | None = None) -> None:
    """Run one tiny request on each named endpoint (default: every local one) so models load.

    External endpoints are skipped unless named (warming them would call the provider).
    """
    catalog = engine.catalog
    if endpoints is None:
        endpoints = [
            ep.name for ep in catalog.endpoints()
            if all(e.external_model is None for e in ep.config.served_entities)
        ]
    for name in endpoints:
        params = ModelParameters() if catalog.task_of(name) == "llm/v1/embeddings" else (
            ModelParameters(max_tokens=1)
        )
        log.info("warming up endpoint %s", name)
        engine.run(request_batch(["warm up"], CallOptions(endpoint=name, model_parameters=params)))


def start_server(
    catalog: Catalog | str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    http_port: int | None = None,
    token: str | None = None,
    tokens_file: str | Path | None = None,
    engine: Engine | None = None,
    engine_kind: str = "local",
    preload: bool | Sequence[str] = False,
    batch_delay: float = 0.0,
    database: str | Path | None = None,
    inference_table: str | Path | None = None,
) -> RunningServer:
    """Start an engine server and return at once; see :func:`serve` for the arguments."""
    auths = [TokenAuth.from_file(tokens_file)]
    if token:
        auths.append(TokenAuth({token: "token"}))
    limiter = RateLimiter()
    if engine is None:
        cat = catalog if isinstance(catalog, Catalog) else (
            Catalog.load(catalog) if catalog is not None else Catalog.default()
        )
        engine = build_server_engine(cat, engine_kind, batch_delay=batch_delay)
    if preload:
        warm_up(engine, None if preload is True else list(preload))
    server = EngineFlightServer(
        engine, f"grpc://{host}:{port}", auth=auths, limiter=limiter, description=engine_kind
    )
    running = RunningServer(server, engine)
    if http_port is not None:
        running.stop_http = _start_http(
            engine, host, http_port, auth=auths, limiter=limiter, tokens_file=tokens_file,
            database=database, inference_table=inference_table,
        )
    log.info(
        "ai_query engine server (%s) listening on %s; endpoints: %s; auth: %s",
        engine_kind, server.url, ", ".join(engine.catalog.names()),
        "on" if server.auth_required else "off",
    )
    return running


def serve(
    catalog: Catalog | str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    http_port: int | None = None,
    token: str | None = None,
    tokens_file: str | Path | None = None,
    engine: Engine | None = None,
    engine_kind: str = "local",
    preload: bool | Sequence[str] = False,
    batch_delay: float = 0.0,
    stop_event: threading.Event | None = None,
    database: str | Path | None = None,
    inference_table: str | Path | None = None,
) -> None:
    """Run an engine server until SIGTERM/SIGINT (or ``stop_event``), then stop gracefully.

    Args:
        catalog: the endpoints (object or file); default: the bundled ones.
        host: address to bind; 127.0.0.1 unless told otherwise.
        port: Flight port (0: any free port).
        http_port: also serve the HTTP API on this port (same engine); off when None.
        token: a bearer token clients must send.
        tokens_file: a JSON/YAML file of ``{token: principal}`` (see
            :class:`ai_query.engine.server.auth.TokenAuth`; re-read when it changes).
        engine: serve this engine instead of building one from the catalog.
        engine_kind: ``local`` (vLLM), or ``deterministic``/``echo`` for tests.
        preload: load models before listening (True: every local endpoint; or names).
        batch_delay: hold each batch this many seconds (failure tests only).
        stop_event: set it to stop the server (for callers not on the main thread).
        database: SQLite file for endpoints created over HTTP (None: in memory).
        inference_table: directory for the HTTP inference table (None: off).
    """
    stop = stop_event or threading.Event()
    signals = _install_signal_handlers(stop)
    server = start_server(
        catalog, host, port, http_port=http_port, token=token, tokens_file=tokens_file,
        engine=engine, engine_kind=engine_kind, preload=preload, batch_delay=batch_delay,
        database=database, inference_table=inference_table,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, previous in signals.items():
            signal.signal(sig, previous)


def run_server_cli(
    catalog: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    http_port: int | None = None,
    token: str | None = None,
    tokens_file: str | Path | None = None,
    database: str | Path | None = None,
    inference_table: str | Path | None = None,
    preload: bool | Sequence[str] = True,
    log_level: str = "INFO",
    engine_kind: str = "local",
    batch_delay: float = 0.0,
    lifeline_fd: int | None = None,
) -> None:
    """What ``ai-query serve`` runs: logging to stderr, then :func:`serve` until a signal.

    ``database`` holds endpoints created over HTTP (default: ``<cache>/serving/endpoints.sqlite``,
    so they survive restarts); ``inference_table`` is a directory for request/response logs.
    ``lifeline_fd``: the read end of a pipe held by the process that started this server; when
    it closes (that process died) the server exits (see :mod:`ai_query.engine.lifeline`).
    """
    configure_logging(log_level)
    if lifeline_fd is not None:
        watch_lifeline(lifeline_fd)
    if engine_kind == "local":
        start_reaper()  # started before any engine, so it notes every engine process
    if http_port is not None and database is None:
        database = settings().cache_dir / "serving" / "endpoints.sqlite"
        database.parent.mkdir(parents=True, exist_ok=True)
    serve(
        str(catalog) if catalog is not None else None, host, port,
        http_port=http_port, token=token, tokens_file=tokens_file, preload=preload,
        database=database, inference_table=inference_table, engine_kind=engine_kind,
        batch_delay=batch_delay,
    )


def configure_logging(level: str = "INFO") -> None:
    """Timestamped log lines on stderr for the server's own loggers."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("ai_query").setLevel(level.upper())


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


# --- HTTP hook --------------------------------------------------------------------------------
# The HTTP API (OpenAI-compatible and Databricks routes) lives in ai_query.engine.server.http. When
# --http-port is given it runs here, in the same process, beside Flight, sharing the engine, the
# bearer tokens and the rate limiter. This function is the one integration point.
def _start_http(
    engine: Engine,
    host: str,
    port: int,
    *,
    auth: Sequence[TokenAuth],
    limiter: RateLimiter,
    tokens_file: str | Path | None,
    database: str | Path | None = None,
    inference_table: str | Path | None = None,
) -> Callable[[], None]:
    try:
        from ai_query.engine.server.http.app import create_app  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ConfigError(
            "the HTTP server is not available in this build "
            "(ai_query.engine.server.http.app is missing); omit --http-port"
        ) from exc
    import uvicorn

    app = create_app(
        engine=engine, host=host, port=port, auth=auth, limiter=limiter, tokens_file=tokens_file,
        database=Path(database) if database else None,
        inference_table=Path(inference_table) if inference_table else None,
    )
    http = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    # uvicorn installs no signal handlers off the main thread: ours stop both servers.
    thread = threading.Thread(target=http.run, name="aiq-http", daemon=True)
    thread.start()
    log.info("HTTP API listening on http://%s:%d", host, port)

    def stop() -> None:
        http.should_exit = True
        thread.join(timeout=30)

    return stop
