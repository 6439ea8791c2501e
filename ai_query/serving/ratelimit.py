"""Endpoint rate limits (Databricks ``rate_limits``), shared by the HTTP and Flight servers.

Each :class:`~ai_query.catalog.RateLimit` of an endpoint is a window of ``renewal_period``
(a minute) that opens at the first call after the previous window closed. ``calls`` counts
requests (a Flight batch of n rows is n calls); ``tokens`` counts prompt plus completion
tokens, recorded after each answer, and admits calls while the window's total is under the
limit. ``key: user`` keeps one window per authenticated principal, ``key: endpoint`` one for
everybody. Nothing here knows about HTTP or Flight: callers ask :meth:`RateLimiter.acquire`
(all or nothing, for HTTP's 429 + ``Retry-After``) or :meth:`RateLimiter.acquire_some`
(as many as allowed, for batches whose remaining rows wait).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ai_query.catalog import Endpoint, RateLimit
from ai_query.errors import RateLimitExceededError

#: Seconds in each ``renewal_period``.
PERIOD_SECONDS: dict[str, float] = {"minute": 60.0}


@dataclass
class _Window:
    start: float
    used: int = 0


class RateLimiter:
    """Counts calls and tokens per endpoint (and principal) in renewing windows; thread-safe."""

    def __init__(
        self,
        *,
        period_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build an empty limiter.

        Args:
            period_scale: multiplies every period (tests use short windows; 1.0 in service).
            clock: monotonic seconds.
        """
        self._scale = period_scale
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, str], _Window] = {}

    def acquire(self, endpoint: Endpoint, principal: str, calls: int = 1) -> float:
        """Take ``calls`` calls if every limit allows all of them now.

        Returns:
            0.0 when admitted; otherwise the seconds to wait before retrying (nothing taken).
        """
        with self._lock:
            now = self._clock()
            room, wait = self._room(endpoint, principal, now)
            if room < calls:
                return max(wait, 0.001)
            self._take(endpoint, principal, calls, now)
            return 0.0

    def acquire_some(self, endpoint: Endpoint, principal: str, calls: int) -> tuple[int, float]:
        """Take as many of ``calls`` as the limits allow now.

        Returns:
            ``(granted, retry_after)``: how many were taken, and, when fewer than ``calls``,
            the seconds until more may be (0.0 when all were granted).
        """
        with self._lock:
            now = self._clock()
            room, wait = self._room(endpoint, principal, now)
            granted = max(0, min(calls, room))
            if granted:
                self._take(endpoint, principal, granted, now)
            if granted == calls:
                return granted, 0.0
            _, wait = self._room(endpoint, principal, now)
            return granted, max(wait, 0.001)

    def check(self, endpoint: Endpoint, principal: str, calls: int = 1) -> None:
        """:meth:`acquire`, raising when refused.

        Raises:
            RateLimitExceededError: carrying ``retry_after`` seconds.
        """
        wait = self.acquire(endpoint, principal, calls)
        if wait > 0:
            raise RateLimitExceededError(
                f"rate limit of endpoint {endpoint.name!r} exceeded; retry after {wait:.1f}s",
                retry_after=wait,
            )

    def wait(
        self,
        endpoint: Endpoint,
        principal: str,
        calls: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Block until ``calls`` calls have been admitted (in as many windows as it takes)."""
        remaining = calls
        while remaining > 0:
            granted, retry_after = self.acquire_some(endpoint, principal, remaining)
            remaining -= granted
            if remaining > 0:
                sleep(retry_after)

    def record_tokens(self, endpoint: Endpoint, principal: str, tokens: int) -> None:
        """Count ``tokens`` (prompt + completion) of an answer against the token limits."""
        if tokens <= 0:
            return
        with self._lock:
            now = self._clock()
            for limit in endpoint.rate_limits:
                if limit.tokens is not None:
                    self._window(endpoint, limit, principal, now).used += tokens

    def _room(self, endpoint: Endpoint, principal: str, now: float) -> tuple[int, float]:
        """(calls admissible now, seconds until the tightest exhausted window renews)."""
        room = 1 << 62
        wait = 0.0
        for limit in endpoint.rate_limits:
            window = self._window(endpoint, limit, principal, now)
            renews = window.start + self._period(limit) - now
            if limit.calls is not None:
                free = limit.calls - window.used
            elif limit.tokens is not None:  # admits calls while tokens remain
                free = room if window.used < limit.tokens else 0
            else:
                continue
            if free <= 0:
                wait = max(wait, renews)
            room = min(room, max(free, 0))
        return room, wait

    def _take(self, endpoint: Endpoint, principal: str, calls: int, now: float) -> None:
        for limit in endpoint.rate_limits:
            if limit.calls is not None:
                self._window(endpoint, limit, principal, now).used += calls

    def _window(self, endpoint: Endpoint, limit: RateLimit, principal: str, now: float) -> _Window:
        who = principal if limit.key == "user" else "*"
        key = (endpoint.name, limit.model_dump_json(), who)
        window = self._windows.get(key)
        if window is None or now >= window.start + self._period(limit):
            if len(self._windows) > 100_000:
                self._prune(now)
            window = _Window(start=now)
            self._windows[key] = window
        return window

    def _period(self, limit: RateLimit) -> float:
        return PERIOD_SECONDS[limit.renewal_period] * self._scale

    def _prune(self, now: float) -> None:
        longest = max(PERIOD_SECONDS.values()) * self._scale
        self._windows = {k: w for k, w in self._windows.items() if now < w.start + longest}
