"""The Flight engine client: the :class:`~ai_query.engine.core.protocol.Engine` protocol over
servers.

:class:`FlightEngineClient` sends each request batch to one or more engine servers
(``ai-query serve``) over Arrow Flight. A batch is cut into chunks, at least one per reachable
server (and at most ``chunk_rows`` rows each); each server gets its chunks on one ``DoExchange``
stream, all written before any answer is read, so they are in flight together. When a server
fails mid-batch, its unanswered chunks go to the other servers (or to the same one after a
reconnect with backoff), a bounded number of times; then the call fails naming the servers.
The back-off doubles per outage, not per failed call: the calls that were in flight together
when a server failed (a UDF sends a batch's slices concurrently) report the same outage once.
A batch is returned whole or not at all: each chunk's answer is checked with
:func:`~ai_query.engine.core.batch.align_results` before it is kept.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from ai_query.catalog import Catalog
from ai_query.engine.core.batch import align_results
from ai_query.engine.flight.wire import (
    ACTION_CATALOG,
    ACTION_HEALTH,
    EXCHANGE_COMMAND,
    PREVIEW_COMMAND,
    bearer_header,
    error_from_flight,
    is_retryable,
)
from ai_query.errors import (
    AIQueryError,
    AuthenticationError,
    ConfigError,
    EngineDeadError,
    EngineUnavailableError,
)
from ai_query.text import one_line

log = logging.getLogger(__name__)



@dataclass
class _Server:
    """What the client knows about one server."""

    url: str
    client: flight.FlightClient | None = None
    inflight_rows: int = 0
    failures: int = 0
    down_until: float = 0.0
    last_error: str = ""
    outages: int = 0
    """How many times it was marked down: an exchange that began before the latest mark
    reports that outage again, and neither doubles the back-off nor closes the new channel."""


class FlightEngineClient:
    """Runs request batches on engine servers over Arrow Flight; thread-safe.

    Args:
        urls: server addresses (``grpc://host:port``): a list, or one string with commas;
            empty: ``AI_QUERY_ENGINE_URL``.
        catalog: the endpoints, for callers that validate before rows run; None: fetched
            from the first server that answers, when first needed.
        token: bearer token for the servers; None: ``AI_QUERY_TOKEN`` if set.
        chunk_rows: most rows per chunk sent to one server.
        max_attempts: how many times a chunk is tried (over all servers) before failing.
        retry_delay: first wait before a failed server is tried again (doubles per failure).
        max_retry_delay: longest such wait.
        timeout: seconds a whole exchange may take; None waits as long as the models work.

    Raises:
        ConfigError: when there is no address or an address is not ``grpc://host:port``.
    """

    def __init__(
        self,
        urls: str | Sequence[str] = (),
        *,
        catalog: Catalog | None = None,
        token: str | None = None,
        chunk_rows: int = 2048,
        max_attempts: int = 4,
        retry_delay: float = 0.5,
        max_retry_delay: float = 10.0,
        timeout: float | None = None,
    ) -> None:
        from ai_query.config import parse_engine_urls, settings

        env = settings()
        self.urls = parse_engine_urls(urls) or env.engine_urls
        if not self.urls:
            raise ConfigError(
                "no engine server address: pass engine_url='grpc://host:port' "
                "or set AI_QUERY_ENGINE_URL"
            )
        self._token = token if token is not None else env.token
        self._catalog = catalog
        self.chunk_rows = max(1, chunk_rows)
        self.max_attempts = max(1, max_attempts)
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.timeout = timeout
        self._servers = [_Server(u) for u in self.urls]
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._pool: ThreadPoolExecutor | None = None

    # -- Engine protocol -------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        """The endpoints (given, or fetched from a server once)."""
        if self._catalog is None:
            data = self._action(ACTION_CATALOG)
            self._catalog = Catalog.from_data(data, source=f"catalog of {self.urls[0]}")
        return self._catalog

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Answer a request batch on the servers; one result row per request row, in order.

        Raises:
            AIQueryError: the error a server raised for the call (same class and message),
                e.g. :class:`~ai_query.errors.UnknownEndpointError`.
            AuthenticationError: a server refused the token.
            EngineUnavailableError: no server answered a chunk within ``max_attempts``.
            EngineDeadError: the only server's engine died, the last time it was tried (its
                own message: whether it restarts, or is FAILED and what brings it back).
        """
        chunks = self._split(batch)
        results: list[pa.RecordBatch | None] = [None] * len(chunks)
        attempts = [0] * len(chunks)
        todo = list(range(len(chunks)))
        while todo:
            plan = self._assign(todo, chunks)
            for i in todo:
                attempts[i] += 1
            todo = []
            last: AIQueryError | None = None
            for indexes, answered, error in self._exchange_all(plan, chunks):
                for i, result in answered.items():
                    results[i] = result
                todo += [i for i in indexes if i not in answered]
                if error is not None and not is_retryable(error):
                    raise error
                if error is not None:
                    last = error  # the server is already marked down (_exchange)
            todo.sort()
            if any(attempts[i] >= self.max_attempts for i in todo):
                if len(self._servers) == 1 and isinstance(last, EngineDeadError):
                    raise last  # the server answered: its word is the truth, not "no answer"
                raise EngineUnavailableError(
                    f"no engine server answered after {self.max_attempts} attempts "
                    f"({len(todo)} of {len(chunks)} chunk(s) of {batch.num_rows} rows unanswered): "
                    + "; ".join(f"{s.url}: {s.last_error or 'not tried'}" for s in self._servers)
                )
        return _combine(results, batch.num_rows)

    def preview(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The preview of a request batch (:mod:`ai_query.engine.core.preview`) from the first
        server that answers; calls no model."""
        chunks = [batch]
        last: AIQueryError | None = None
        for pos in self._usable_servers() or range(len(self._servers)):
            answered, error = self._exchange(self._servers[pos], [0], chunks, PREVIEW_COMMAND)
            if error is None:
                return align_results(answered[0], batch.num_rows)
            if not is_retryable(error):
                raise error
            last = error
        raise last or EngineUnavailableError("no engine server to preview the batch on")

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            servers = list(self._servers)
            pool, self._pool = self._pool, None
        for server in servers:
            _close(server)
        if pool is not None:
            pool.shutdown(wait=False)

    # -- health ----------------------------------------------------------------------------
    def health(self, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
        """Each server's ``healthcheck`` answer, or ``{"status": "unreachable"|"refused", ...}``."""
        out: dict[str, dict[str, Any]] = {}
        for server in self._servers:
            try:
                out[server.url] = self._action_on(server, ACTION_HEALTH, timeout)
            except AuthenticationError as exc:
                out[server.url] = {"status": "refused", "error": str(exc), "refused": True}
            except AIQueryError as exc:
                out[server.url] = {"status": "unreachable", "error": str(exc)}
        return out

    def check(self, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
        """The servers' health; raises unless at least one answers ``ok``.

        Raises:
            AuthenticationError: no server answers and one refused the token.
            EngineUnavailableError: no server answers, with each server's error.
        """
        status = self.health(timeout=timeout)
        if not any(s.get("status") == "ok" for s in status.values()):
            _raise_for(status, "no engine server answers")
        return status

    def wait_ready(self, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Block until every server answers its health check.

        Raises:
            AuthenticationError: a server refused the token.
            EngineUnavailableError: when ``timeout`` passes first, with each server's error.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.health(timeout=2.0)
            if all(s.get("status") == "ok" for s in status.values()):
                return status
            if time.monotonic() > deadline or any(s.get("refused") for s in status.values()):
                _raise_for(status, "engine server(s) not ready")
            time.sleep(0.2)

    # -- internals -------------------------------------------------------------------------
    def _split(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        n = batch.num_rows
        if n == 0:
            return [batch]
        usable = sum(1 for s in self._servers if s.down_until <= time.monotonic()) or 1
        count = min(n, max(usable, math.ceil(n / self.chunk_rows)))
        bounds = np.linspace(0, n, count + 1).astype(int)
        return [batch.slice(a, b - a) for a, b in itertools.pairwise(bounds)]

    def _assign(self, todo: list[int], chunks: list[pa.RecordBatch]) -> dict[int, list[int]]:
        """Chunk indexes per server position, least-loaded server first."""
        servers = self._usable_servers()
        plan: dict[int, list[int]] = {}
        with self._lock:
            start = next(self._turn)
            load = {pos: self._servers[pos].inflight_rows for pos in servers}
            order = servers[start % len(servers):] + servers[: start % len(servers)]
            for i in todo:
                pos = min(order, key=lambda p: load[p])
                load[pos] += chunks[i].num_rows
                plan.setdefault(pos, []).append(i)
        return plan

    def _usable_servers(self) -> list[int]:
        """Positions of servers not in their back-off; waits for the first one to come back."""
        while True:
            now = time.monotonic()
            up = [p for p, s in enumerate(self._servers) if s.down_until <= now]
            if up:
                return up
            time.sleep(min(s.down_until for s in self._servers) - now)

    def _exchange_all(
        self, plan: dict[int, list[int]], chunks: list[pa.RecordBatch]
    ) -> list[tuple[list[int], dict[int, pa.RecordBatch], AIQueryError | None]]:
        jobs = [(self._servers[pos], indexes) for pos, indexes in plan.items()]
        if len(jobs) == 1:
            server, indexes = jobs[0]
            return [(indexes, *self._exchange(server, indexes, chunks))]
        pool = self._executor()
        futures = [pool.submit(self._exchange, s, idx, chunks) for s, idx in jobs[1:]]
        first = self._exchange(jobs[0][0], jobs[0][1], chunks)
        outs = [first] + [f.result() for f in futures]
        return [(idx, *out) for (_, idx), out in zip(jobs, outs, strict=True)]

    def _exchange(
        self,
        server: _Server,
        indexes: list[int],
        chunks: list[pa.RecordBatch],
        command: bytes = EXCHANGE_COMMAND,
    ) -> tuple[dict[int, pa.RecordBatch], AIQueryError | None]:
        """Send ``indexes`` on one stream; the answered chunks, and the error that stopped it
        (a retryable one has marked the server down)."""
        rows = sum(chunks[i].num_rows for i in indexes)
        with self._lock:
            server.inflight_rows += rows
            outages = server.outages
        answered: dict[int, pa.RecordBatch] = {}
        client: flight.FlightClient | None = None
        error: AIQueryError
        try:
            client = self._client(server)
            descriptor = flight.FlightDescriptor.for_command(command)
            writer, reader = client.do_exchange(descriptor, self._options(self.timeout))
            try:
                writer.begin(chunks[indexes[0]].schema)
                for i in indexes:
                    writer.write_batch(chunks[i])
                writer.done_writing()
                for i in indexes:
                    answer = reader.read_chunk().data
                    answered[i] = align_results(answer, chunks[i].num_rows)
            finally:
                _quiet_close(writer)
            with self._lock:
                server.failures = 0
            return answered, None
        except StopIteration:
            error = EngineUnavailableError(
                f"{server.url} ended the stream after {len(answered)} of {len(indexes)} batches"
            )
        except AIQueryError as exc:  # e.g. a misaligned answer
            error = exc
        except Exception as exc:  # noqa: BLE001 - translated once, here
            error = self._translate(server, exc)
        finally:
            with self._lock:
                server.inflight_rows -= rows
        if is_retryable(error):
            self._mark_down(server, error, outages, client)
        return answered, error

    def _translate(self, server: _Server, exc: BaseException) -> AIQueryError:
        if isinstance(exc, (flight.FlightUnauthenticatedError, flight.FlightUnauthorizedError)):
            hint = "wrong token" if self._token else "no token was sent"
            return AuthenticationError(
                f"engine server {server.url} refused the call ({hint}): pass token=... "
                "or set AI_QUERY_TOKEN"
            )
        if isinstance(exc, flight.FlightError):
            sent = error_from_flight(exc)
            if sent is not None:
                return sent
        return EngineUnavailableError(f"engine server {server.url} failed: {_short(exc)}")

    def _mark_down(
        self, server: _Server, error: AIQueryError, outages: int,
        client: flight.FlightClient | None,
    ) -> None:
        """Back off from ``server`` after ``error`` on an exchange that began when it had been
        marked down ``outages`` times on channel ``client``."""
        with self._lock:
            server.last_error = str(error).removeprefix(f"engine server {server.url} failed: ")
            if server.outages != outages:
                # An exchange that began before the server was last marked down: the same
                # outage, already counted (or a newer one, counted by a newer exchange).
                return
            server.outages += 1
            server.failures += 1
            wait = getattr(error, "retry_after", None)
            if not isinstance(wait, (int, float)):
                wait = min(self.retry_delay * 2 ** (server.failures - 1), self.max_retry_delay)
            server.down_until = time.monotonic() + float(wait)
            # Reconnect on next use (a restarted server gets a fresh channel); a channel opened
            # since this exchange began is not this one's to close.
            channel = server.client if server.client is client else None
            if channel is not None:
                server.client = None
        if channel is not None:
            _quiet_close(channel)
        log.warning("engine server %s failed (retry in %.1fs): %s", server.url, wait, error)

    def _client(self, server: _Server) -> flight.FlightClient:
        with self._lock:
            if server.client is None:
                server.client = flight.FlightClient(server.url)
            return server.client

    def _options(self, timeout: float | None) -> flight.FlightCallOptions:
        headers = [bearer_header(self._token)] if self._token else []
        return flight.FlightCallOptions(timeout=timeout, headers=headers)

    def _action_on(self, server: _Server, kind: str, timeout: float | None) -> Any:
        try:
            results = list(self._client(server).do_action(flight.Action(kind, b""),
                                                           self._options(timeout)))
            return json.loads(results[0].body.to_pybytes())
        except AIQueryError:
            raise
        except Exception as exc:  # translated once, here
            error = self._translate(server, exc)
            if isinstance(error, EngineUnavailableError):
                _close(server)
            raise error from exc

    def _action(self, kind: str) -> Any:
        errors = []
        for server in self._servers:
            try:
                return self._action_on(server, kind, 30.0)
            except EngineUnavailableError as exc:
                errors.append(str(exc))
        raise EngineUnavailableError(f"no engine server answered {kind!r}: " + "; ".join(errors))

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=8 * len(self._servers), thread_name_prefix="aiq-flight"
                )
            return self._pool

    def __repr__(self) -> str:
        return f"FlightEngineClient({list(self.urls)!r})"


def _raise_for(status: dict[str, dict[str, Any]], what: str) -> None:
    for s in status.values():
        if s.get("refused"):
            raise AuthenticationError(str(s["error"]))
    reasons = "; ".join(f"{u}: {s.get('error', s.get('status'))}" for u, s in status.items())
    raise EngineUnavailableError(f"{what}: {reasons}")


def _combine(results: list[pa.RecordBatch | None], num_rows: int) -> pa.RecordBatch:
    parts = [r for r in results if r is not None]
    if len(parts) != len(results):
        raise EngineUnavailableError("internal error: a chunk has no answer")
    if len(parts) == 1:
        return parts[0]
    combined = pa.concat_batches(parts)
    rows = pa.array(np.arange(num_rows, dtype=np.int64))
    return combined.set_column(0, combined.schema.field("row"), rows)


def _close(server: _Server) -> None:
    client, server.client = server.client, None
    if client is not None:
        _quiet_close(client)


def _quiet_close(thing: Any) -> None:
    try:
        thing.close()
    except Exception:  # noqa: BLE001, S110 - closing a broken stream or channel
        pass


def _short(exc: BaseException, limit: int = 300) -> str:
    return one_line(one_line(exc).split(". gRPC client debug context:")[0], limit)
