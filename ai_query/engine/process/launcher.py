"""Start and stop engine server subprocesses: ``ai-query serve``, run as users run it.

The private engine of a DuckDB connection (:mod:`ai_query.engine.process.embedded`), the embedded
server of local Spark, the tests and the benchmarks run ``python -m ai_query serve`` (the same
command as the ``ai-query serve`` script) in its own process group, wait (boundedly) until it
reports its ports and its health check answers, and stop it with SIGTERM (graceful) then SIGKILL.
Every server started here is also stopped when this process exits, and it exits by itself when
this process dies, even of SIGKILL: it holds one end of a lifeline socket pair whose other end
only this process holds. The server reports that it listens, and on which ports, over the same
lifeline (see :mod:`ai_query.engine.process.lifeline`); its log is for people, never parsed.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ai_query.catalog import Catalog
from ai_query.config import effective_vllm_environment
from ai_query.engine.kinds import EngineKind
from ai_query.engine.process.lifeline import ReadyReader, ReadyReport
from ai_query.errors import EngineUnavailableError
from ai_query.timings import mark

_started: list[ServerProcess] = []
_lock = threading.Lock()
_atexit_registered = False


class ServerProcess:
    """A running engine server subprocess."""

    def __init__(
        self, proc: subprocess.Popen[bytes], log_path: Path, token: str | None,
        workdir: Path | None = None, *, host: str = "127.0.0.1",
    ) -> None:
        self.proc = proc
        """The process."""
        self.lifeline: socket.socket | None = None
        """This process's end of the server's lifeline (closing it makes the server exit; the
        server reports its ports on it)."""
        self.log_path = log_path
        """Its log file (stdout and stderr)."""
        self.token = token
        """The bearer token it requires, if any."""
        self.url = ""
        """``grpc://host:port``, known once it listens."""
        self.ready: ReadyReport | None = None
        """Its ports, as it reported them once it listened."""
        self._host = host
        self._workdir = workdir

    @property
    def pid(self) -> int:
        """Process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of its log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        """Wait until the server reports over its lifeline that it listens, and its health check
        answers (its models may still be starting, see ``warm``).

        Raises:
            EngineUnavailableError: it exited or did not get ready in time (with its log tail).
        """
        from ai_query.engine.flight.client import FlightEngineClient

        deadline = time.monotonic() + timeout
        client: FlightEngineClient | None = None
        reader = ReadyReader(self.lifeline) if self.lifeline is not None else None
        try:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise EngineUnavailableError(
                        f"engine server exited with code {self.proc.returncode}; log "
                        f"{self.log_path}:\n{self.log_tail()}"
                    )
                if self.ready is None and reader is not None:
                    try:
                        self.ready = reader.poll(timeout=0.2)
                    except ValueError as exc:
                        self.stop(grace=5)
                        raise EngineUnavailableError(
                            f"engine server sent no readiness report ({exc}); log "
                            f"{self.log_path}:\n{self.log_tail()}"
                        ) from exc
                    if reader.closed:  # it closed its end: it is exiting
                        self._wait_exit(2.0)
                        continue
                    if self.ready is None:
                        continue  # the poll waited
                    self.url = f"grpc://{self._host}:{self.ready.flight_port}"
                if self.url:
                    client = client or FlightEngineClient([self.url], token=self.token or "")
                    status = client.health(timeout=2.0)[self.url]
                    # not_ready: a model it warms is still starting (or failed to: the batches
                    # that need it report why); the server itself answers.
                    if status.get("status") in ("ok", "not_ready"):
                        return
                time.sleep(0.2)
        finally:
            if client is not None:
                client.close()
        self.stop(grace=5)
        raise EngineUnavailableError(
            f"engine server not ready after {timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}"
        )

    def _wait_exit(self, seconds: float) -> None:
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, grace: float = 60.0) -> None:
        """SIGTERM (in-flight batches finish), then SIGKILL the group after ``grace`` seconds.

        A temporary directory the launcher made for the server (log, catalog) is removed.
        """
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()
        self._cut_lifeline()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _cut_lifeline(self) -> None:
        if self.lifeline is not None:
            self.lifeline.close()
            self.lifeline = None

    def kill(self) -> None:
        """SIGKILL at once (failure tests)."""
        self._kill_group()
        self._cut_lifeline()

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this launcher created
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def __repr__(self) -> str:
        return f"ServerProcess(pid={self.pid}, url={self.url!r})"


def start_server_process(
    catalog: Catalog | str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    engine: EngineKind | str = EngineKind.VLLM,
    preload: bool | Sequence[str] = True,
    warm: Sequence[str] = (),
    token: str | None = None,
    engine_factory: str | None = None,
    startup_timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
    log_dir: str | Path | None = None,
) -> ServerProcess:
    """Start an engine server subprocess and wait until it is healthy.

    Args:
        catalog: the endpoints (object or file); None: the bundled ones.
        host: address to bind.
        port: Flight port; 0 picks a free one (the server reports it over its lifeline).
        engine: what runs the models: vLLM or the deterministic backend (``--engine``).
        preload: load models before listening (True: every local endpoint; or names).
        warm: endpoints whose models start in the background once the server listens.
        token: bearer token the server requires (passed in a private file, not argv).
        engine_factory: ``module:callable`` building the engine to serve instead
            (``--engine-factory``; e.g. the test engines of :mod:`ai_query.testing`).
        startup_timeout: most seconds to wait for the health check.
        env: extra environment variables for the server.
        log_dir: where the log goes (default: a temporary directory, removed by ``stop``).

    Raises:
        EngineUnavailableError: the server exited or did not get ready in time.
    """
    own_dir = log_dir is None
    if log_dir is None:
        workdir = Path(tempfile.mkdtemp(prefix="ai-query-server-"))
    else:
        workdir = Path(log_dir)
        workdir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "ai_query", "serve", "--no-http",
            "--host", host, "--port", str(port), "--engine", str(engine)]
    if catalog is not None:
        path = Path(catalog) if not isinstance(catalog, Catalog) else workdir / "catalog.json"
        if isinstance(catalog, Catalog):
            path.write_text(json.dumps(catalog.to_data()))
        args += ["--catalog", str(path)]
    args += ["--preload", ("all" if preload is True else ",".join(preload)) if preload else "none"]
    if warm:
        args += ["--warm", ",".join(warm)]
    tokens = workdir / f"tokens-{time.time_ns()}.json"
    if token:
        tokens.touch(mode=0o600)
        tokens.write_text(json.dumps({token: "launcher"}))
        args += ["--tokens-file", str(tokens)]
    if engine_factory:
        args += ["--engine-factory", engine_factory]
    log_path = workdir / f"engine-server-{time.time_ns()}.log"
    # The lifeline: the server's end is inherited; this process keeps the other (see lifeline).
    ours, theirs = socket.socketpair()
    args += ["--lifeline-fd", str(theirs.fileno())]
    if own_dir:
        args += ["--private-dir", str(workdir)]
    server_env = {**os.environ, **dict(env or {})}
    if str(engine) == EngineKind.VLLM:  # its in-process engines (embeddings) get tcmalloc too
        preload = effective_vllm_environment().get("LD_PRELOAD")
        if preload:
            server_env["LD_PRELOAD"] = preload
    mark("launcher: server spawn")
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=server_env, start_new_session=True,
                pass_fds=(theirs.fileno(),),
            )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    server = ServerProcess(proc, log_path, token, workdir if own_dir else None, host=host)
    server.lifeline = ours
    _remember(server)
    try:
        server.wait_ready(startup_timeout)
        mark("launcher: server ready")
    finally:
        tokens.unlink(missing_ok=True)  # the server has read it (it keeps the last good tokens)
    return server


def _remember(server: ServerProcess) -> None:
    global _atexit_registered
    with _lock:
        _started.append(server)
        if not _atexit_registered:
            atexit.register(stop_all)
            _atexit_registered = True


def stop_all() -> None:
    """Stop every server this process started (also run at exit)."""
    with _lock:
        servers = list(_started)
        _started.clear()
    for server in servers:
        server.stop(grace=30)
