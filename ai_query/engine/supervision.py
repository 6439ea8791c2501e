"""Supervision of engine processes: states, and bounded restarts with backoff.

A vLLM engine process (or a private engine server) can die: killed, out of memory, crashed.
Rows in flight then fail with :class:`~ai_query.errors.EngineDeadError`, and the next request
starts a fresh one, as long as :class:`RestartPolicy` allows: by default 3 restarts within
5 minutes, waiting 1 s, 2 s, 4 s ... before each. Past that, requests fail with one clear error
naming the last cause. :class:`Supervisor` keeps that account for one engine; its
:class:`EngineHealth` is what health checks, Databricks endpoint states and metrics report.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ai_query.errors import EngineDeadError


class EngineState(str, enum.Enum):
    """Where an engine is in its life."""

    NOT_STARTED = "NOT_STARTED"
    """Not needed yet; it starts with the first request (ready to take one)."""
    STARTING = "STARTING"
    """Being built (first start)."""
    READY = "READY"
    """Answering requests."""
    DEAD = "DEAD"
    """Died; the next request restarts it."""
    RESTARTING = "RESTARTING"
    """Being rebuilt after dying."""
    FAILED = "FAILED"
    """Died more often than the restart policy allows; requests fail."""

    @property
    def ready(self) -> bool:
        """Whether a request sent now is answered without a (re)start."""
        return self in (EngineState.NOT_STARTED, EngineState.READY)


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """How often a dead engine may be restarted."""

    max_restarts: int = 3
    """Restarts allowed within :attr:`window_s`."""
    window_s: float = 300.0
    """The sliding window, in seconds."""
    backoff_s: float = 1.0
    """Wait before the first restart in the window; doubles for each further one."""
    max_backoff_s: float = 30.0
    """Longest wait before a restart."""


@dataclass(frozen=True)
class EngineHealth:
    """A snapshot of one engine's health."""

    state: EngineState
    """Its state."""
    restarts: int = 0
    """Restarts since the process started."""
    last_error: str | None = None
    """Why it last died, if it did."""

    def to_data(self) -> dict[str, object]:
        """As JSON data."""
        return {"state": self.state.value, "restarts": self.restarts, "last_error": self.last_error}


class Supervisor:
    """The restart account of one engine; thread-safe.

    Args:
        name: what the engine runs (for messages).
        policy: restart limits.
        clock: monotonic time source (tests pass a fake one).
    """

    def __init__(
        self,
        name: str,
        policy: RestartPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.policy = policy or RestartPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._state = EngineState.NOT_STARTED
        self._restart_times: deque[float] = deque()
        self._restarts = 0
        self._last_error: str | None = None

    def health(self) -> EngineHealth:
        """The engine's health now."""
        with self._lock:
            return EngineHealth(self._state, self._restarts, self._last_error)

    @property
    def state(self) -> EngineState:
        """The engine's state now."""
        return self._state

    @property
    def needs_start(self) -> bool:
        """Whether the next request must (re)start the engine."""
        return self._state in (EngineState.NOT_STARTED, EngineState.DEAD)

    def starting(self) -> float:
        """Record that a (re)start begins; returns how long to wait before it.

        Raises:
            EngineDeadError: the engine died more often than the policy allows.
        """
        with self._lock:
            if self._state is EngineState.FAILED:
                raise self._exhausted()
            if self._state is not EngineState.DEAD:
                self._state = EngineState.STARTING
                return 0.0
            now = self._clock()
            while self._restart_times and now - self._restart_times[0] > self.policy.window_s:
                self._restart_times.popleft()
            if len(self._restart_times) >= self.policy.max_restarts:
                self._state = EngineState.FAILED
                raise self._exhausted()
            delay = min(
                self.policy.max_backoff_s, self.policy.backoff_s * 2 ** len(self._restart_times)
            )
            self._restart_times.append(now)
            self._restarts += 1
            self._state = EngineState.RESTARTING
            return delay

    def started(self) -> None:
        """Record that the engine answers requests."""
        with self._lock:
            self._state = EngineState.READY

    def start_failed(self, cause: BaseException | str) -> None:
        """Record that a (re)start failed; the next request tries again (within the policy)."""
        self.died(cause)

    def died(self, cause: BaseException | str) -> None:
        """Record that the engine died of ``cause``."""
        with self._lock:
            self._last_error = _describe(cause)
            if self._state is not EngineState.FAILED:
                self._state = EngineState.DEAD

    def stopped(self) -> None:
        """Record an orderly stop (the next request starts it again, not counted as a restart)."""
        with self._lock:
            if self._state is not EngineState.FAILED:
                self._state = EngineState.NOT_STARTED

    def _exhausted(self) -> EngineDeadError:
        policy = self.policy
        return EngineDeadError(
            f"the engine for {self.name} died {policy.max_restarts + 1} times within "
            f"{policy.window_s:.0f} s and is not restarted again; last cause: {self._last_error}"
        )


_SEVERITY = (
    EngineState.READY,
    EngineState.NOT_STARTED,
    EngineState.STARTING,
    EngineState.RESTARTING,
    EngineState.DEAD,
    EngineState.FAILED,
)


def worst_health(healths: list[EngineHealth]) -> EngineHealth:
    """The least ready of ``healths`` (restarts summed), e.g. for an endpoint's entities."""
    if not healths:
        return EngineHealth(EngineState.NOT_STARTED)
    worst = max(healths, key=lambda h: _SEVERITY.index(h.state))
    errors = [h.last_error for h in healths if h.last_error]
    return EngineHealth(
        worst.state, sum(h.restarts for h in healths), worst.last_error or (errors or [None])[-1]
    )


def _describe(cause: BaseException | str) -> str:
    if isinstance(cause, str):
        return cause
    text = " ".join(str(cause).split())
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
