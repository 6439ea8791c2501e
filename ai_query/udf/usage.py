"""What AI calls have cost on this machine: the history that EXPLAIN's estimates come from.

:class:`MeteredEngine` wraps the engine a SQL connection uses and measures each endpoint's busy
spells (from the first request batch in flight to the last one done, so concurrent batches are
not counted twice): the requests sent, the prompt and completion tokens, and the seconds.
:class:`UsageHistory` keeps the most recent spells per endpoint in a small JSON file under the
cache directory, and estimates from them the output tokens a request takes and the seconds a
call of so many tokens takes on this machine (least squares over the spells; seconds per
request where the spells cannot tell prompt from output cost).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ai_query.config import settings
from ai_query.engine.core.batch import read_request_batch
from ai_query.engine.core.budget import paid_rows, shares_answers, spent_tokens
from ai_query.engine.core.forwarding import ForwardingEngine
from ai_query.engine.core.protocol import Engine

#: Spells kept per endpoint.
KEEP = 64


@dataclass(frozen=True)
class Spell:
    """One busy spell of an endpoint."""

    requests: int
    """Requests sent (rows with a request)."""
    prompt_tokens: int
    """Tokens read."""
    completion_tokens: int
    """Tokens generated."""
    seconds: float
    """Wall time from the first batch sent to the last answered."""


def default_history_path() -> Path:
    """Where this machine's usage history lives: ``AI_QUERY_USAGE_HISTORY``, else
    ``<cache dir>/usage_history.json``."""
    found = settings()
    return found.usage_history or found.cache_dir / "usage_history.json"


class UsageHistory:
    """Recent busy spells per endpoint, in a JSON file (thread-safe; the file is rewritten
    whole, atomically)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_history_path()
        self._lock = threading.Lock()
        self._spells: dict[str, list[Spell]] = {}
        try:
            data = json.loads(self.path.read_text())
            self._spells = {k: [Spell(**s) for s in v] for k, v in data.items()}
        except (OSError, ValueError, TypeError):
            self._spells = {}

    def add(self, endpoint: str, spell: Spell) -> None:
        """Remember a spell of ``endpoint`` (the oldest go past :data:`KEEP`)."""
        with self._lock:
            spells = [*self._spells.get(endpoint, []), spell][-KEEP:]
            self._spells[endpoint] = spells
            data = {k: [asdict(s) for s in v] for k, v in self._spells.items()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.path)
        except OSError:  # a read-only cache directory: the history stays in memory
            pass

    def spells(self, endpoint: str) -> list[Spell]:
        """The recent spells of ``endpoint``, oldest first."""
        with self._lock:
            return list(self._spells.get(endpoint, []))

    def output_per_request(self, endpoint: str) -> float | None:
        """Mean tokens generated per request, or None without history."""
        spells = self.spells(endpoint)
        requests = sum(s.requests for s in spells)
        if not requests:
            return None
        return sum(s.completion_tokens for s in spells) / requests

    def seconds(
        self, endpoint: str, requests: int, prompt_tokens: float, completion_tokens: float
    ) -> float | None:
        """Estimated wall seconds of a call of this size, or None without history.

        Fits seconds = a * prompt tokens + b * completion tokens over the spells (each spell's
        own batching included); where that fit is not sound (too few spells, or a negative
        cost), seconds per request over all spells.
        """
        spells = [s for s in self.spells(endpoint) if s.requests]
        if not spells:
            return None
        if requests == 0:
            return 0.0
        x = np.array([[s.prompt_tokens, s.completion_tokens] for s in spells], dtype=np.float64)
        y = np.array([s.seconds for s in spells], dtype=np.float64)
        if len(spells) >= 3 and np.linalg.matrix_rank(x) == 2:
            (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
            if a >= 0 and b >= 0:
                return float(a * prompt_tokens + b * completion_tokens)
        per_request = float(y.sum()) / sum(s.requests for s in spells)
        return per_request * requests


class MeteredEngine(ForwardingEngine):
    """An engine that records each endpoint's busy spells in a :class:`UsageHistory`."""

    def __init__(self, inner: Engine, history: UsageHistory) -> None:
        super().__init__(inner)
        self.history = history
        self._lock = threading.Lock()
        self._open: dict[str, dict[str, Any]] = {}

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Answer ``batch`` on the inner engine, measuring it."""
        requests, options = read_request_batch(batch)
        name = options.endpoint
        with self._lock:
            spell = self._open.setdefault(
                name, {"active": 0, "start": time.monotonic(), "requests": 0, "prompt": 0,
                       "completion": 0},
            )
            spell["active"] += 1
        result = None
        try:
            result = self.inner.run(batch)
            return result
        finally:
            endpoint = self.catalog.get(name)
            paid = paid_rows(requests, shares_answers(options, endpoint))
            self._close(name, paid, result)

    def _close(self, name: str, paid: np.ndarray, result: pa.RecordBatch | None) -> None:
        """Count a batch into its endpoint's spell (its paid rows: one per distinct request
        of a call that does not sample); the spell ends when no batch is in flight."""
        counted = None if result is None else spent_tokens(result, paid)
        with self._lock:
            spell = self._open[name]
            spell["active"] -= 1
            if counted is not None:
                spell["requests"] += int(paid.sum())
                spell["prompt"] += counted[0]
                spell["completion"] += counted[1]
            if spell["active"]:
                return
            del self._open[name]
        if spell["prompt"] or spell["completion"]:  # not answered from caches alone
            self.history.add(name, Spell(
                spell["requests"], spell["prompt"], spell["completion"],
                time.monotonic() - spell["start"],
            ))
