"""The Arrow Flight engine server: any :class:`~ai_query.engine.protocol.Engine` behind Flight.

Each ``DoExchange`` stream carries the request batches of one call (see
:mod:`ai_query.engine.flight_wire`). A reader thread takes request batches off the stream as
they arrive and hands each to a thread pool running ``engine.run``; the handler writes the
results back in order. So every batch of every stream is in flight at once, and a
:class:`~ai_query.engine.local.LocalEngine` sees all their rows together on vLLM.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from ai_query.engine.flight_wire import (
    ACTION_CATALOG,
    ACTION_HEALTH,
    ACTIONS,
    AUTH_HEADER,
    error_to_flight,
)
from ai_query.engine.protocol import Engine

log = logging.getLogger(__name__)

_AUTH = "auth"


class BearerTokenMiddleware(flight.ServerMiddleware):
    """Remembers who made a call (the principal of the token it presented)."""

    def __init__(self, principal: str) -> None:
        self.principal = principal


class BearerTokenMiddlewareFactory(flight.ServerMiddlewareFactory):
    """Refuses every call that lacks one of the server's bearer tokens."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = [(tok.encode(), principal) for tok, principal in tokens.items()]

    def start_call(self, info: Any, headers: Mapping[str, list[str]]) -> BearerTokenMiddleware:
        """Check the ``authorization`` header; raise FlightUnauthenticatedError without a match."""
        for value in headers.get(AUTH_HEADER, []):
            scheme, _, presented = value.partition(" ")
            if scheme.lower() != "bearer":
                continue
            for token, principal in self._tokens:
                if hmac.compare_digest(token, presented.encode()):
                    return BearerTokenMiddleware(principal)
        raise flight.FlightUnauthenticatedError(
            "missing or invalid bearer token for this ai_query engine server"
        )


class EngineFlightServer(flight.FlightServerBase):
    """Serves an engine over Arrow Flight; starts listening when constructed.

    Args:
        engine: the engine answering request batches (thread-safe ``run``).
        location: ``grpc://host:port`` to bind (port 0: any free port, see :attr:`port`).
        tokens: bearer token -> principal; when non-empty every call must present a token.
        max_workers: most request batches run at once (over all streams).
        description: a word for logs and health (e.g. ``local``, ``deterministic``).
    """

    def __init__(
        self,
        engine: Engine,
        location: str = "grpc://127.0.0.1:0",
        *,
        tokens: Mapping[str, str] | None = None,
        max_workers: int = 256,
        description: str = "engine",
    ) -> None:
        middleware = {_AUTH: BearerTokenMiddlewareFactory(tokens)} if tokens else None
        super().__init__(location, middleware=middleware)
        self.engine = engine
        self.description = description
        self.auth_required = bool(tokens)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="aiq-batch")
        self._lock = threading.Lock()
        self._started = time.time()
        self._draining = False
        self.stats: dict[str, int] = {
            "exchanges": 0, "active_exchanges": 0, "batches": 0, "rows": 0, "errors": 0,
        }
        """Counters since start: exchanges, active_exchanges, batches, rows, errors."""
        host = location.split("://", 1)[-1].rsplit(":", 1)[0]
        self.url = f"grpc://{host}:{self.port}"
        """The address clients use."""

    # -- data ------------------------------------------------------------------------------
    def do_exchange(self, context: Any, descriptor: Any, reader: Any, writer: Any) -> None:
        """Answer each request batch of the stream with a result batch, in order."""
        peer = _peer(context)
        started = time.monotonic()
        self._count(exchanges=1, active_exchanges=1)
        pending: queue.Queue[Future[pa.RecordBatch] | None] = queue.Queue()
        stop = threading.Event()
        reader_thread = threading.Thread(
            target=self._read_requests, args=(reader, pending, stop), daemon=True,
            name="aiq-exchange-reader",
        )
        reader_thread.start()
        batches = rows = 0
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
            log.info(
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
            self._count(active_exchanges=-1, batches=batches, rows=rows)

    def _read_requests(
        self, reader: Any, pending: queue.Queue[Future[pa.RecordBatch] | None], stop: threading.Event
    ) -> None:
        try:
            for chunk in reader:
                if chunk.data is not None and not stop.is_set():
                    pending.put(self._pool.submit(self.engine.run, chunk.data))
        except Exception as exc:  # noqa: BLE001 - a client that went away ends the stream
            failed: Future[pa.RecordBatch] = Future()
            failed.set_exception(exc)
            pending.put(failed)
        finally:
            pending.put(None)

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
        """Status (``ok`` or ``draining``), engine kind, endpoints and counters."""
        with self._lock:
            stats = dict(self.stats)
        return {
            "status": "draining" if self._draining else "ok",
            "engine": self.description,
            "endpoints": self.engine.catalog.names(),
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


def _peer(context: Any) -> str:
    try:
        peer = context.peer()
        name = context.get_middleware(_AUTH)
    except Exception:  # noqa: BLE001 - only for log lines
        return "?"
    text = peer.decode() if isinstance(peer, bytes) else str(peer)
    return f"{text} ({name.principal})" if name is not None else text
