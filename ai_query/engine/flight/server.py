"""Any :class:`~ai_query.engine.core.protocol.Engine` behind Arrow Flight: the server half of the
transport whose client is :class:`~ai_query.engine.flight.client.FlightEngineClient`.

Each ``DoExchange`` stream carries the request batches of one call (see
:mod:`ai_query.engine.flight.wire`). A reader thread takes request batches off the stream as
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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

from ai_query.engine.core.preview import preview
from ai_query.engine.core.protocol import Engine, engine_health
from ai_query.engine.flight.wire import (
    ACTION_CATALOG,
    ACTION_HEALTH,
    ACTIONS,
    PREVIEW_COMMAND,
    error_to_flight,
)

log = logging.getLogger(__name__)


class EngineFlightServer(flight.FlightServerBase):
    """Serves an engine over Arrow Flight (no auth: loopback helpers such as a Spark job's
    engine); starts listening when constructed. :class:`ai_query.serving.flight.
    ServingFlightServer` adds bearer tokens, permissions and rate limits.

    Args:
        engine: the engine answering request batches (thread-safe ``run``).
        location: ``grpc://host:port`` to bind (port 0: any free port, see :attr:`port`).
        max_workers: most request batches run at once (over all streams).
        description: a word for logs and health (e.g. ``vllm``, ``deterministic``).
        middleware: Flight server middleware (the serving subclass's authentication).
    """

    def __init__(
        self,
        engine: Engine,
        location: str = "grpc://127.0.0.1:0",
        *,
        max_workers: int = 256,
        description: str = "engine",
        middleware: dict[str, flight.ServerMiddlewareFactory] | None = None,
    ) -> None:
        super().__init__(location, middleware=middleware)
        self.engine = engine
        self.description = description
        self.auth_required = False
        """Whether calls must carry a bearer token."""
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
        peer = _peer(context, self.caller(context))
        principal = self.caller(context)
        started = time.monotonic()
        self._count(exchanges=1, active_exchanges=1)
        pending: queue.Queue[Future[pa.RecordBatch] | None] = queue.Queue()
        stop = threading.Event()
        previewing = descriptor.command == PREVIEW_COMMAND
        answer = self._preview_batch if previewing else self._run_batch
        reader_thread = threading.Thread(
            target=self._read_requests, args=(reader, pending, stop, principal, answer),
            daemon=True,
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
                if previewing:
                    continue
                batches += 1
                rows += result.num_rows
                prompt_tokens += result_total(result, "prompt_tokens")
                completion_tokens += result_total(result, "completion_tokens")
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
        principal: Any,
        answer: Callable[[pa.RecordBatch, Any], pa.RecordBatch],
    ) -> None:
        try:
            for chunk in reader:
                if chunk.data is not None and not stop.is_set():
                    pending.put(self._pool.submit(answer, chunk.data, principal))
        except Exception as exc:  # noqa: BLE001 - a client that went away ends the stream
            failed: Future[pa.RecordBatch] = Future()
            failed.set_exception(exc)
            pending.put(failed)
        finally:
            pending.put(None)

    def caller(self, context: Any) -> Any:
        """Who makes a call (None here: no authentication)."""
        return None

    def _run_batch(self, batch: pa.RecordBatch, caller: Any) -> pa.RecordBatch:
        """Answer one request batch for ``caller``."""
        return self.engine.run(batch)

    def _preview_batch(self, batch: pa.RecordBatch, caller: Any) -> pa.RecordBatch:
        """The preview of one request batch for ``caller`` (no model call)."""
        return preview(self.engine, batch)

    # -- actions ---------------------------------------------------------------------------
    def list_actions(self, context: Any) -> list[tuple[str, str]]:
        """The actions this server answers."""
        return list(ACTIONS.items())

    def do_action(self, context: Any, action: Any) -> list[flight.Result]:
        """``healthcheck`` or ``catalog``; see :mod:`ai_query.engine.flight.wire`."""
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


def result_total(result: pa.RecordBatch, column: str) -> int:
    """The sum of a result batch's token column (0 when absent)."""
    if column not in result.schema.names:
        return 0
    return int(pc.sum(result.column(column)).as_py() or 0)


def _peer(context: Any, caller: Any) -> str:
    try:
        peer = context.peer()
        text = peer.decode() if isinstance(peer, bytes) else str(peer)
        name = getattr(caller, "name", None)
        return f"{text} ({name})" if name else text
    except Exception:  # noqa: BLE001 - only for log lines
        return "?"
