"""multiprocessing's internals behind the zygote (:mod:`ai_query.engine.vllm.zygote`): starting an
interpreter as spawn does, and handing a waiting one the spawn's data. Listed in
:data:`ai_query.engine.vllm.compat.INTERNALS` with vLLM's."""

from __future__ import annotations

import io
import multiprocessing.context as mp_context
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import popen_spawn_posix, reduction, resource_tracker, spawn, util
from typing import Any

# --- multiprocessing: starting an interpreter, and handing it a spawn ----------------------
SpawnContext = mp_context.SpawnContext


def interpreter_flags() -> list[str]:
    """This interpreter's command-line flags, as a spawned interpreter gets them."""
    flags: list[str] = util._args_from_interpreter_flags()  # type: ignore[attr-defined]
    return flags


def spawn_executable() -> Any:
    """The interpreter multiprocessing's spawn runs (as it keeps it: bytes on POSIX)."""
    return spawn.get_executable()


def resource_tracker_fd() -> int | None:
    """The file descriptor of multiprocessing's resource tracker (started if need be)."""
    return resource_tracker.getfd()


def start_passing_fds(executable: Any, args: list[Any], fds: Sequence[int]) -> int:
    """Start ``args`` with ``fds`` kept open in the child, as spawn starts an interpreter; its
    pid."""
    return int(util.spawnv_passfds(executable, args, list(fds)))  # type: ignore[arg-type]


def become_spawned(pipe_fd: int, tracker_fd: int) -> None:
    """Run as the process whose spawn data come down ``pipe_fd`` (does not return)."""
    spawn.spawn_main(pipe_handle=pipe_fd, tracker_fd=tracker_fd)


@dataclass(frozen=True)
class Spawn:
    """A process multiprocessing is about to spawn."""

    passed_fds: list[int]
    """File descriptors its process object passes to the child."""
    executable: Any
    """The interpreter it would run (:func:`spawn_executable`)."""


@dataclass(frozen=True)
class HandOff:
    """A running process that becomes the spawned one when it is sent the spawn's data."""

    pid: int
    sentinel: int
    """What ``multiprocessing.connection.wait`` watches for its exit."""
    fds: list[int]
    """Closed when the process object goes away."""
    send: Callable[[bytes], None] = field(repr=False)
    """Sends the data ``spawn_main`` reads: preparation data, then the process object."""


#: Called at each spawn: a function that takes it over (its HandOff, or None after all),
#: or None for an ordinary spawn.
Claim = Callable[[], "Callable[[Spawn], HandOff | None] | None"]


def handing_off_context(claim: Claim) -> SpawnContext:
    """A spawn context whose processes start in a waiting process when ``claim`` gives one
    (one claim per process: a later call replaces it; the classes are module-level because
    a spawned process unpickles its process object's class)."""
    global _claim
    _claim = claim
    return _HandOffContext()


_claim: Claim | None = None


class _HandOffPopen(popen_spawn_posix.Popen):
    _fds: list[int]

    def _launch(self, process_obj: Any) -> None:
        take = _claim() if _claim is not None else None
        if take is None:
            return super()._launch(process_obj)  # type: ignore[misc]
        prep_data = spawn.get_preparation_data(process_obj._name)
        data = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, data)
            reduction.dump(process_obj, data)
        finally:
            mp_context.set_spawning_popen(None)
        target = take(Spawn(list(self._fds), spawn.get_executable()))
        if target is None:
            self._fds = []
            return super()._launch(process_obj)  # type: ignore[misc]
        self.pid = target.pid
        self.sentinel = target.sentinel
        self.finalizer = util.Finalize(  # type: ignore[attr-defined]
            self, util.close_fds, list(target.fds)  # type: ignore[attr-defined]
        )
        target.send(bytes(data.getbuffer()))
        return None


class _HandOffProcess(mp_context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # multiprocessing's name
        return _HandOffPopen(process_obj)


class _HandOffContext(mp_context.SpawnContext):
    Process = _HandOffProcess  # type: ignore[assignment]
