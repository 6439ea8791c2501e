"""One background asyncio loop per process, on which every backend lives.

vLLM's ``AsyncLLM`` must be built and used on a single event loop; callers are ordinary threads
(DuckDB's worker threads, Flight handlers), so they hand coroutines to this loop with
:meth:`EngineLoop.submit` and wait on the returned future. All rows of all concurrent batches
are then in flight together.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class EngineLoop:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self, name: str = "ai-query-engine") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop."""
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop; thread-safe."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (not from the loop's own thread).

        Args:
            coro: what to run.
            timeout: the longest wait in seconds (then ``coro`` is cancelled and
                ``concurrent.futures.TimeoutError`` raised); None waits as long as it runs.

        Raises:
            RuntimeError: called from the loop's thread, or the loop has stopped (nothing
                would ever run ``coro``).
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("EngineLoop.run called from the loop thread")
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the engine loop has stopped")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop and join its thread (waiting at most 10 s)."""
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


_shared: EngineLoop | None = None
_shared_lock = threading.Lock()


def shared_loop() -> EngineLoop:
    """The process-wide engine loop, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = EngineLoop()
            atexit.register(_shared.stop)
        return _shared


def settle(future: asyncio.Future[T], outcome: T | BaseException) -> None:
    """Give ``future`` its result (or exception, when ``outcome`` is one) unless it is done
    (e.g. cancelled). Call on the future's loop."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coro`` as a task on the running loop, referenced until it ends (the loop itself
    keeps only weak references to tasks)."""
    task = asyncio.ensure_future(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


_running: set[asyncio.Task[Any]] = set()
