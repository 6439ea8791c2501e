"""Supervision of engine processes: states, and bounded restarts with backoff.

A vLLM engine process (or a private engine server) can die: killed, out of memory, crashed.
Rows in flight then fail with :class:`~ai_query.errors.EngineDeadError`, and the next request
starts a fresh one, as long as :class:`RestartPolicy` allows: by default 3 restarts within
5 minutes, waiting 1 s, 2 s, 4 s ... before each (the wait runs from the moment the request
asks for the restart; the engine's own start-up comes after it). A death past that makes the
engine FAILED at once: every later request fails with one clear error naming the last cause
and what brings the engine back (:meth:`Supervisor.outlook`, the one place that says it).
:class:`Supervisor` keeps that account for one engine; its :class:`EngineHealth` is what health
checks, Databricks endpoint states and metrics report.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ai_query.errors import EngineDeadError
from ai_query.text import one_line


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
    """Died more often than the restart policy allows; requests fail until the process that
    runs it is restarted."""

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
        name: the engine as messages name it (``"the vLLM engine for smollm2"``).
        policy: restart limits.
        revival: what brings the engine back once it is FAILED, as an instruction to the
            reader (``"restart the engine server (pid 12)"``); nothing in this process does.
        clock: monotonic time source (tests pass a fake one).
    """

    def __init__(
        self,
        name: str,
        policy: RestartPolicy | None = None,
        *,
        revival: str = "restart the process that runs it",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.policy = policy or RestartPolicy()
        self.revival = revival
        """What brings the engine back once it is FAILED."""
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
                raise self.failure()
            if self._state is not EngineState.DEAD:
                self._state = EngineState.STARTING
                return 0.0
            now = self._clock()
            self._forget_old(now)
            delay = self._backoff()
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
        """Record that the engine died of ``cause``: DEAD (the next request restarts it), or
        FAILED when the policy's restarts within its window are used up."""
        with self._lock:
            self._last_error = _describe(cause)
            if self._state is EngineState.FAILED:
                return
            self._forget_old(self._clock())
            if len(self._restart_times) >= self.policy.max_restarts:
                self._state = EngineState.FAILED
            else:
                self._state = EngineState.DEAD

    def outlook(self) -> str:
        """What happens to the engine next, for the end of an error message: the next
        request restarts it (after how long), or it is FAILED and what brings it back."""
        with self._lock:
            if self._state is EngineState.FAILED:
                return self._failed_text("it", cause=False)
            if self._state is EngineState.DEAD:
                return f"the next request restarts it (after a wait of {self._backoff():g} s)"
            if self._state in (EngineState.STARTING, EngineState.RESTARTING):
                return "it is being restarted"
            return "the next request starts it"

    def failure(self) -> EngineDeadError:
        """The error every request to a FAILED engine gets."""
        return EngineDeadError(self._failed_text(self.name, cause=True))

    def stopped(self) -> None:
        """Record an orderly stop (the next request starts it again, not counted as a restart)."""
        with self._lock:
            if self._state is not EngineState.FAILED:
                self._state = EngineState.NOT_STARTED

    def _failed_text(self, subject: str, *, cause: bool) -> str:
        policy = self.policy
        last = f" (last cause: {self._last_error})" if cause and self._last_error else ""
        return (
            f"{subject} is FAILED: it died {policy.max_restarts + 1} times within "
            f"{policy.window_s:g} s{last} and is not restarted again; {self.revival} to bring "
            "it back"
        )

    def _forget_old(self, now: float) -> None:
        """Drop restarts that left the policy's window."""
        while self._restart_times and now - self._restart_times[0] > self.policy.window_s:
            self._restart_times.popleft()

    def _backoff(self) -> float:
        """The wait before the next restart: doubles with each restart in the window."""
        policy = self.policy
        return float(min(policy.max_backoff_s, policy.backoff_s * 2 ** len(self._restart_times)))


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
    text = one_line(str(cause))
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
