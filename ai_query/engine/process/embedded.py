"""The embedded engine: vLLM in a private engine server, a child process of the caller.

Why a child process: vLLM's CPU build starts its EngineCore with multiprocessing ``spawn``,
which re-imports the parent's ``__main__``. A user's script without an ``if __name__ ==
"__main__":`` guard would then run again inside the EngineCore and fail. The child here is
``ai-query serve`` (``python -m ai_query serve``), a fresh interpreter of our own module, so the
user's main module is never re-executed, whatever started it (a script file, ``python -m``,
``python -c``, a notebook kernel, pytest, cron, Airflow). It also keeps torch and vLLM, their
memory and their log output out of the user's process. Batches reach it over Arrow Flight on
loopback, with a random bearer token; ``bench/duckdb_vs_offline.py`` measures what that costs.

Supervision: the server restarts a vLLM engine whose process died (see
:mod:`ai_query.engine.vllm.backend`); this class restarts the server itself when it died, on
the next batch, within the same :class:`~ai_query.engine.process.supervision.RestartPolicy`. The
server
exits when this process dies, even of SIGKILL (see :mod:`ai_query.engine.process.lifeline`).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence

import pyarrow as pa

from ai_query.catalog import Catalog
from ai_query.engine.flight.client import FlightEngineClient
from ai_query.engine.kinds import SERVER_ENGINE_KINDS, EngineKind
from ai_query.engine.process.launcher import ServerProcess, start_server_process
from ai_query.engine.process.supervision import (
    EngineHealth,
    EngineState,
    RestartPolicy,
    Supervisor,
)
from ai_query.errors import AIQueryError, EngineDeadError, EngineUnavailableError

log = logging.getLogger(__name__)


class EmbeddedEngine:
    """Runs request batches on a private engine server that this object starts and owns.

    Thread-safe. The server starts with the first batch, or earlier with
    :meth:`start_in_background`; its models start when a batch needs them, or when the server
    listens for those named to :meth:`start_in_background`.

    Args:
        catalog: the endpoints to serve.
        engine_kind: what runs the models in that server: vLLM or the deterministic backend.
        policy: how often a server that died is started again.
        startup_timeout: most seconds to wait for the server to answer.
    """

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        engine_kind: EngineKind | str = EngineKind.VLLM,
        policy: RestartPolicy | None = None,
        startup_timeout: float = 300.0,
    ) -> None:
        self.catalog = catalog or Catalog.default()
        self.engine_kind = EngineKind.parse(engine_kind, allowed=SERVER_ENGINE_KINDS)
        self.startup_timeout = startup_timeout
        self.supervisor = Supervisor(
            "the private engine server", policy,
            revival=f"restart this program (pid {os.getpid()})",
        )
        """Restarts of the server process."""
        self._lock = threading.Lock()
        self._server: ServerProcess | None = None
        self._client: FlightEngineClient | None = None
        self._warm: tuple[str, ...] = ()

    @property
    def server(self) -> ServerProcess | None:
        """The running server process, if started."""
        return self._server

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Answer a request batch on the private server (started or restarted as needed).

        Raises:
            EngineDeadError: the server or its vLLM engine died while the batch ran (the
                message says whether the next batch restarts it), or died more often than the
                restart policy allows.
        """
        server, client = self._ensure()
        try:
            return client.run(batch)
        except EngineUnavailableError as exc:
            if server.alive():
                raise
            cause = _exit_cause(server)
            self.supervisor.died(cause)
            raise EngineDeadError(f"{cause}; {self.supervisor.outlook()}") from exc

    def preview(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The preview of a request batch (:mod:`ai_query.engine.core.preview`) on the private
        server (started as needed; its models are not: counting needs their tokenizers only)."""
        return self._ensure()[1].preview(batch)

    def start_in_background(self, warm: Sequence[str] = ()) -> None:
        """Start the server now, on a thread, and then the models of the endpoints ``warm``
        (cold start: they load while the caller plans its query). Returns at once; the first
        batch waits for the server, and a failed start is reported by that batch.
        """
        self._warm = tuple(dict.fromkeys(warm))
        threading.Thread(target=self._start_quietly, name="aiq-server-start", daemon=True).start()

    def _start_quietly(self) -> None:
        try:
            self._ensure()
        except AIQueryError as exc:  # the first batch starts it again and reports
            log.info("the engine server did not start in the background: %s", exc)

    def ensure_started(self) -> str:
        """Start the server now if it does not run; returns its Flight address."""
        return self._ensure()[0].url

    def endpoint_health(self) -> dict[str, EngineHealth]:
        """Each endpoint's health, as the server reports it (or the server's own state)."""
        server, client = self._server, self._client
        own = self.supervisor.health()
        if server is None or client is None or not server.alive():
            state = EngineState.DEAD if server is not None else own.state
            return {name: EngineHealth(state, own.restarts, own.last_error)
                    for name in self.catalog.names()}
        status = client.health(timeout=5.0).get(server.url, {})
        return {
            name: EngineHealth(EngineState(data["state"]), data["restarts"], data["last_error"])
            for name, data in status.get("endpoint_states", {}).items()
        }

    def close(self) -> None:
        """Stop the server (gracefully: in-flight batches finish, models shut down)."""
        with self._lock:
            self._discard(grace=30.0)
            self.supervisor.stopped()

    def _ensure(self) -> tuple[ServerProcess, FlightEngineClient]:
        with self._lock:
            if self._server is not None and not self._server.alive():
                self.supervisor.died(_exit_cause(self._server))
                self._discard(grace=0.0)
            if self._server is None or self._client is None:
                time.sleep(self.supervisor.starting())
                token = secrets.token_urlsafe(24)
                try:
                    server = start_server_process(
                        self.catalog, engine=self.engine_kind, preload=False, warm=self._warm,
                        token=token, startup_timeout=self.startup_timeout,
                    )
                except EngineUnavailableError as exc:
                    self.supervisor.start_failed(exc)
                    raise
                # One attempt per batch: rows in flight when an engine dies fail with it.
                self._client = FlightEngineClient(
                    [server.url], catalog=self.catalog, token=token, max_attempts=1
                )
                self._server = server
                self.supervisor.started()
            return self._server, self._client

    def _discard(self, grace: float) -> None:
        client, server = self._client, self._server
        self._client = self._server = None
        if client is not None:
            client.close()
        if server is not None:
            server.stop(grace=grace)

    def __repr__(self) -> str:
        return f"EmbeddedEngine(kind={self.engine_kind!r}, server={self._server!r})"


def _exit_cause(server: ServerProcess) -> str:
    return f"the engine server (pid {server.pid}) exited with code {server.proc.returncode}"
