"""No engine process outlives its parent, even after SIGKILL.

SIGKILL cannot be caught, so two small watchers do the clean-up from outside:

* The **reaper**: a process that hosts vLLM engines (``ai-query serve``, a private engine
  server, a test) starts one reaper (:func:`start_reaper`), a fresh interpreter running
  ``python -m ai_query.engine.process.lifeline``, told the host's PID on the first line of a pipe
  whose
  write end only the host holds. It notes the host's descendants (vLLM's EngineCore,
  multiprocessing's resource tracker) by PID and start time every half second. When the pipe
  reaches end of file, the host is gone, however it died: the reaper kills the descendants it
  noted that still run (the same PID *and* start time, never a name), then exits.
* The **lifeline**: a private engine server started for a user's process (see
  :mod:`ai_query.engine.process.launcher`) gets one end of a socket pair whose other end only
  that user's process holds (:func:`watch_lifeline`). End of file means the user's process died;
  the server exits at once and its reaper kills its engines. The same socket carries the other
  way the server's one readiness report, a JSON line with its ports (:func:`report_ready`,
  :class:`ReadyReport`), so the launcher never reads the server's log to learn them.

Linux only (``/proc``); on other systems both do nothing.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PROC = Path("/proc")
_SCAN_INTERVAL_S = 0.5
_reaper: subprocess.Popen[bytes] | None = None
_reaper_lock = threading.Lock()


def start_reaper() -> None:
    """Start this process's reaper (once; later calls do nothing)."""
    global _reaper
    if not _PROC.is_dir():
        return
    with _reaper_lock:
        if _reaper is not None and _reaper.poll() is None:
            return
        # Its own session: a signal to the host's process group must not take the reaper first.
        _reaper = subprocess.Popen(
            [sys.executable, "-m", "ai_query.engine.process.lifeline"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
        if _reaper.stdin is not None:  # whom to watch: the pipe's first line
            _reaper.stdin.write(f"{os.getpid()}\n".encode())
            _reaper.stdin.flush()


def watch_lifeline(fd: int, leftovers: Path | None = None) -> None:
    """Exit this process at once when the other end of lifeline ``fd`` closes (its parent
    died), removing the directory ``leftovers`` first (files its parent made for it)."""

    def wait() -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        log.warning("the process that started this server is gone: exiting")
        if leftovers is not None:
            shutil.rmtree(leftovers, ignore_errors=True)
        os._exit(70)

    threading.Thread(target=wait, name="aiq-lifeline", daemon=True).start()


@dataclass(frozen=True, kw_only=True)
class ReadyReport:
    """What a started server reports over its lifeline once it listens."""

    flight_port: int
    """The port its Flight server listens on (the one it picked, for port 0)."""
    http_port: int | None = None
    """The port of its HTTP API; None: no HTTP server."""

    def to_line(self) -> bytes:
        """The report as one JSON line."""
        return (json.dumps({"flight_port": self.flight_port, "http_port": self.http_port})
                + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> ReadyReport:
        """The report a line carries.

        Raises:
            ValueError: the line is not a readiness report.
        """
        data = json.loads(line)
        if not isinstance(data, dict) or not isinstance(data.get("flight_port"), int):
            raise ValueError(f"not a readiness report: {line[:200]!r}")
        http = data.get("http_port")
        return cls(
            flight_port=data["flight_port"], http_port=http if isinstance(http, int) else None
        )


def report_ready(fd: int, report: ReadyReport) -> None:
    """Tell the process at the other end of lifeline ``fd`` that this server is ready.

    A process that is gone gets nothing: its end of file already makes this server exit.
    """
    data = report.to_line()
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError as exc:
        log.warning("could not report readiness over the lifeline: %s", exc)


class ReadyReader:
    """Reads a server's readiness report from the launcher's end of its lifeline, a little at a
    time, so that the launcher can watch the process between reads."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self.closed = False
        """Whether the server's end closed before a full report came (it exited)."""

    def poll(self, timeout: float) -> ReadyReport | None:
        """The report, once a whole line has come within ``timeout`` seconds; else None.

        Raises:
            ValueError: the server sent something that is not a report.
        """
        if self.closed:
            return None
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if ready:
            chunk = self._sock.recv(4096)
            if not chunk:
                self.closed = True
                return None
            self._buffer += chunk
        line, newline, _ = self._buffer.partition(b"\n")
        return ReadyReport.from_line(line) if newline else None


def descendants(root: int) -> dict[int, int]:
    """PID -> start time of every live descendant of ``root`` (from ``/proc``)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None:
            ppid, start = stat
            parents.setdefault(ppid, []).append(int(entry.name))
            starts[int(entry.name)] = start
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def kill_noted(noted: dict[int, int]) -> list[int]:
    """SIGKILL each noted process that still runs with the same start time; returns their PIDs."""
    killed = []
    for pid, start in noted.items():
        stat = _stat(pid)
        if stat is None or stat[1] != start:
            continue  # gone, or the PID now belongs to another process
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def read_host(pipe_fd: int = 0) -> int | None:
    """The host's PID, the first line its pipe carries (None: the pipe ended first)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(pipe_fd, 1)
        if not chunk:
            return None
        line += chunk
    return int(line)


def reap(host: int, pipe_fd: int = 0) -> None:
    """The reaper's loop: note ``host``'s descendants until ``pipe_fd`` ends, then kill them."""
    noted: dict[int, int] = {}
    me = os.getpid()
    while True:
        ready, _, _ = select.select([pipe_fd], [], [], _SCAN_INTERVAL_S)
        if ready and not os.read(pipe_fd, 4096):
            break
        if _stat(host) is None:
            break
        for pid, start in descendants(host).items():
            if pid != me:
                noted[pid] = start
    # Descendants that were reparented keep their own children: note those too, then kill all.
    for pid in list(noted):
        noted.update(descendants(pid))
    deadline = time.monotonic() + 1.0  # an orderly exit may still be finishing
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in noted.items()):
        time.sleep(0.1)
    kill_noted(noted)


def _alive(pid: int, start: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] == start


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent PID, start time) of a live (not zombie) process, or None."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the host's terminal is not ours
    watched = read_host()
    if watched is not None:
        reap(watched)
