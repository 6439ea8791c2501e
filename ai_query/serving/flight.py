"""The Arrow Flight engine server: any :class:`~ai_query.engine.protocol.Engine` behind Flight.

Each ``DoExchange`` stream carries the request batches of one call (see
:mod:`ai_query.engine.flight_wire`). A reader thread takes request batches off the stream as
they arrive and hands each to a thread pool running ``engine.run``; the handler writes the
results back in order. So every batch of every stream is in flight at once, and a
:class:`~ai_query.engine.local.LocalEngine` sees all their rows together on vLLM.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

from ai_query.engine.batch import CALL_METADATA_KEY, REQUEST_COLUMN
from ai_query.engine.flight_wire import (
    ACTION_CATALOG,
    ACTION_HEALTH,
    ACTIONS,
    AUTH_HEADER,
    error_to_flight,
)
from ai_query.engine.protocol import Engine, engine_health
from ai_query.errors import AuthenticationError
from ai_query.options import CallOptions
from ai_query.serving.auth import ANONYMOUS_IDENTITY, TokenAuth
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


class EngineFlightServer(flight.FlightServerBase):
    """Serves an engine over Arrow Flight; starts listening when constructed.

    Args:
        engine: the engine answering request batches (thread-safe ``run``).
        location: ``grpc://host:port`` to bind (port 0: any free port, see :attr:`port`).
        auth: bearer tokens (shared with the HTTP server); every call must present one that
            one of them accepts. None or empty: auth off.
        limiter: endpoint rate limits (shared with the HTTP server): a batch waits until its
            rows are admitted. None: no limits.
        max_workers: most request batches run at once (over all streams).
        description: a word for logs and health (e.g. ``local``, ``deterministic``).
    """

    def __init__(
        self,
        engine: Engine,
        location: str = "grpc://127.0.0.1:0",
        *,
        auth: Sequence[TokenAuth] | None = None,
        limiter: RateLimiter | None = None,
        max_workers: int = 256,
        description: str = "engine",
    ) -> None:
        auths = [a for a in auth or () if a.enabled]
        middleware = {_AUTH: TokenAuthMiddlewareFactory(auths)} if auths else None
        super().__init__(location, middleware=middleware)
        self.engine = engine
        self.limiter = limiter
        self.description = description
        self.auth_required = bool(auths)
        self.authorize: Callable[[Identity, str], None] | None = None
        """Raises PermissionDeniedError unless the caller may query the endpoint named (set
        by the server to the HTTP side's endpoint permissions); None: every endpoint of the
        catalog may be queried by every caller, as its permissions say."""
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="aiq-batch")
        self._lock = threading.Lock()
        self._started = time.time()
        self._draining = False
        self.stats: dict[str, int] = dict.fromkeys(
            ("exchanges", "active_exchanges", "batches", "rows", "errors", "prompt_tokens",
             "completion_tokens"), 0
        )
        """Counters since start: exchanges, active_exchanges, batches, rows, errors, tokens."""
        host = location.split("://", 1)[-1].rsplit(":", 1)[0]
        self.url = f"grpc://{host}:{self.port}"
        """The address clients use."""

    # -- data ------------------------------------------------------------------------------
    def do_exchange(self, context: Any, descriptor: Any, reader: Any, writer: Any) -> None:
        """Answer each request batch of the stream with a result batch, in order."""
        peer = _peer(context)
        principal = _identity(context)
        started = time.monotonic()
        self._count(exchanges=1, active_exchanges=1)
        pending: queue.Queue[Future[pa.RecordBatch] | None] = queue.Queue()
        stop = threading.Event()
        reader_thread = threading.Thread(
            target=self._read_requests, args=(reader, pending, stop, principal), daemon=True,
            name="aiq-exchange-reader",
        )
        reader_thread.start()
        batches = rows = prompt_tokens = completion_tokens = 0
        try:
            begun = False
            while (future := pending.get()) is not None:
                result = future.result()
                if not begun:
                    writer.begin(result.schema)
                    begun = True
                writer.write_batch(result)
                batches += 1
                rows += result.num_rows
                prompt_tokens += _total(result, "prompt_tokens")
                completion_tokens += _total(result, "completion_tokens")
            log.debug(
                "exchange from %s: %d batch(es), %d rows in %.2fs",
                peer, batches, rows, time.monotonic() - started,
            )
        except flight.FlightError:
            self._count(errors=1)
            raise
        except Exception as exc:
            self._count(errors=1)
            log.warning("exchange from %s failed after %d batch(es): %s", peer, batches, exc)
            raise error_to_flight(exc) from exc
        finally:
            stop.set()
            # The reader must be done with the stream before the handler returns; a client
            # always ends its side after its last batch, so this join is short.
            reader_thread.join()
            self._count(
                active_exchanges=-1, batches=batches, rows=rows, prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )

    def _read_requests(
        self,
        reader: Any,
        pending: queue.Queue[Future[pa.RecordBatch] | None],
        stop: threading.Event,
        principal: Identity,
    ) -> None:
        try:
            for chunk in reader:
                if chunk.data is not None and not stop.is_set():
                    pending.put(self._pool.submit(self._run_batch, chunk.data, principal))
        except Exception as exc:  # noqa: BLE001 - a client that went away ends the stream
            failed: Future[pa.RecordBatch] = Future()
            failed.set_exception(exc)
            pending.put(failed)
        finally:
            pending.put(None)

    def _run_batch(self, batch: pa.RecordBatch, caller: Identity) -> pa.RecordBatch:
        endpoint = None
        meta = (batch.schema.metadata or {}).get(CALL_METADATA_KEY)
        name = CallOptions.from_json(meta).endpoint if meta is not None else None
        if name is not None and self.authorize is not None:
            self.authorize(caller, name)  # CAN_QUERY, before any row runs
        if self.limiter is not None and name is not None:
            endpoint = self.engine.catalog.get(name)
        if endpoint is None or not endpoint.rate_limits or self.limiter is None:
            return self.engine.run(batch)
        # Throttle rather than fail: the rows wait until the endpoint's limits admit them.
        rows = batch.num_rows - batch.column(REQUEST_COLUMN).null_count
        self.limiter.wait(endpoint, caller.name, rows)
        result = self.engine.run(batch)
        used = _total(result, "prompt_tokens") + _total(result, "completion_tokens")
        self.limiter.record_tokens(endpoint, caller.name, used)
        return result

    # -- actions ---------------------------------------------------------------------------
    def list_actions(self, context: Any) -> list[tuple[str, str]]:
        """The actions this server answers."""
        return list(ACTIONS.items())

    def do_action(self, context: Any, action: Any) -> list[flight.Result]:
        """``healthcheck`` or ``catalog``; see :mod:`ai_query.engine.flight_wire`."""
        kind = action.type
        if kind == ACTION_HEALTH:
            return [flight.Result(json.dumps(self.health()).encode())]
        if kind == ACTION_CATALOG:
            return [flight.Result(json.dumps(public_catalog_data(self.engine)).encode())]
        raise flight.FlightServerError(f"unknown action {kind!r}; known: {', '.join(ACTIONS)}")

    def health(self) -> dict[str, Any]:
        """Status, engine kind, endpoints with their engines' states, and counters.

        ``status`` is ``ok``, ``not_ready`` (an engine is dead, restarting or failed: see
        ``endpoint_states``) or ``draining`` (stopping).
        """
        with self._lock:
            stats = dict(self.stats)
        states = engine_health(self.engine)
        ready = all(h.state.ready for h in states.values())
        return {
            "status": "draining" if self._draining else ("ok" if ready else "not_ready"),
            "engine": self.description,
            "endpoints": self.engine.catalog.names(),
            "endpoint_states": {name: h.to_data() for name, h in states.items()},
            "engine_restarts": sum(h.restarts for h in states.values()),
            "uptime_s": round(time.time() - self._started, 3),
            "auth": self.auth_required,
            **stats,
        }

    # -- lifecycle -------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop taking new calls; return when in-flight exchanges have finished."""
        with self._lock:
            self._draining = True
            active = self.stats["active_exchanges"]
        log.info("engine server %s: shutting down (%d exchange(s) in flight)", self.url, active)
        super().shutdown()
        self._pool.shutdown(wait=True)
        log.info("engine server %s: stopped", self.url)

    def _count(self, **delta: int) -> None:
        with self._lock:
            for key, value in delta.items():
                self.stats[key] += value


def public_catalog_data(engine: Engine) -> dict[str, Any]:
    """The engine's catalog as JSON data, with plaintext API keys removed."""
    data = engine.catalog.to_data()
    for endpoint in data.get("endpoints", []):
        for entity in endpoint.get("config", {}).get("served_entities", []):
            config = (entity.get("external_model") or {}).get("openai_config") or {}
            config.pop("openai_api_key_plaintext", None)
    return data


def _total(result: pa.RecordBatch, column: str) -> int:
    if column not in result.schema.names:
        return 0
    return int(pc.sum(result.column(column)).as_py() or 0)


def _identity(context: Any) -> Identity:
    middleware = context.get_middleware(_AUTH)
    return middleware.identity if middleware is not None else ANONYMOUS_IDENTITY


def _principal(context: Any) -> str:
    return _identity(context).name


def _peer(context: Any) -> str:
    try:
        peer = context.peer()
        text = peer.decode() if isinstance(peer, bytes) else str(peer)
        return f"{text} ({_principal(context)})"
    except Exception:  # noqa: BLE001 - only for log lines
        return "?"
