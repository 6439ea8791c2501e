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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ai_query.config import settings
from ai_query.engine.core.batch import answered_cached, read_request_batch, read_request_files
from ai_query.engine.core.budget import paid_rows, shares_answers, spent_tokens
from ai_query.engine.core.ceiling import output_ceiling
from ai_query.engine.core.forwarding import ForwardingEngine
from ai_query.engine.core.memo import RowKey, row_keys
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
    max_tokens: int = 0
    """The calls' output ceiling per request (the largest in the spell; 0: not recorded)."""
    computed_tokens: int = 0
    """Prompt tokens not shared with another request's prefix (:func:`computed_tokens`; what
    a prefix-caching engine computes); 0: not recorded, :attr:`prompt_tokens` stands in."""

    @property
    def computed(self) -> int:
        """:attr:`computed_tokens`, or :attr:`prompt_tokens` where not recorded."""
        return self.computed_tokens or self.prompt_tokens


#: Tokens per KV-cache block: a prefix is reused in whole blocks (ai_query's vLLM setting).
PREFIX_BLOCK = 32


def computed_tokens(texts: Sequence[str], tokens: Sequence[int]) -> float:
    """The prompt tokens a prefix-caching engine computes for these requests: each request's
    tokens less the whole blocks of the prefix it shares with the request before it (in
    sorted order); rows behind one long instruction compute it about once."""
    total, previous = 0.0, ""
    for i in sorted(range(len(texts)), key=texts.__getitem__):
        text, count = texts[i], tokens[i]
        shared = len(os.path.commonprefix([previous, text]))  # noqa: RUF071 (characters)
        reused = count * shared / max(len(text), 1) // PREFIX_BLOCK * PREFIX_BLOCK
        total += count - reused
        previous = text
    return total


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

    def output_per_request(self, endpoint: str, ceiling: int) -> float | None:
        """Expected tokens generated per request under an output ``ceiling`` (max_tokens), or
        None without history: the share of their ceiling that past requests used, times
        ``ceiling`` (small models often write to the ceiling; a bigger ceiling, more text);
        spells without a ceiling recorded give their mean."""
        spells = [s for s in self.spells(endpoint) if s.requests]
        if not spells:
            return None
        capped = [s for s in spells if s.max_tokens]
        if capped:
            used = sum(s.completion_tokens for s in capped)
            share = used / sum(s.requests * s.max_tokens for s in capped)
            return min(share, 1.0) * ceiling
        return min(sum(s.completion_tokens for s in spells) / sum(s.requests for s in spells),
                   ceiling)

    def seconds(
        self, endpoint: str, requests: int, prompt_tokens: float, completion_tokens: float,
        ceiling: int = 0,
    ) -> float | None:
        """Estimated wall seconds of a call of this size, or None without history.

        ``prompt_tokens`` are those to compute (:func:`computed_tokens`). Fits seconds =
        a * computed prompt tokens + b * completion tokens + c * ceiling over the spells:
        reading and writing cost per token, and the last rows' decoding (up to the ceiling,
        one step at a time) is a tail no batch hides. Where that fit is not sound (too few
        spells, a negative cost), the same without the tail; else seconds per request.
        """
        spells = [s for s in self.spells(endpoint) if s.requests]
        if not spells:
            return None
        if requests == 0:
            return 0.0
        y = np.array([s.seconds for s in spells], dtype=np.float64)
        columns = [
            [s.computed for s in spells], [s.completion_tokens for s in spells],
            [s.max_tokens for s in spells],
        ]
        wanted = [prompt_tokens, completion_tokens, ceiling]
        for width in (3, 2):
            x = np.array(columns[:width], dtype=np.float64).T
            coefficients = _robust_fit(x, y)
            if coefficients is not None and (coefficients >= 0).all():
                return float(np.dot(coefficients, wanted[:width]))
        per_request = float(y.sum()) / sum(s.requests for s in spells)
        return per_request * requests


def _robust_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Least squares of y on x, refitted without the spells that sit far off the first fit
    (a spell that waited for an engine to start, say); None when the spells cannot fit."""
    width = x.shape[1]
    if len(y) <= width or np.linalg.matrix_rank(x) < width:
        return None
    coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
    residuals = np.abs(y - x @ coefficients)
    keep = residuals <= 3 * max(float(np.median(residuals)), 1e-9)
    if keep.sum() > width and not keep.all() and np.linalg.matrix_rank(x[keep]) == width:
        coefficients, *_ = np.linalg.lstsq(x[keep], y[keep], rcond=None)
    return np.asarray(coefficients)


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
        keys = row_keys(requests, read_request_files(batch))
        name = options.endpoint
        with self._lock:
            spell = self._open.setdefault(
                name, {"active": 0, "start": time.monotonic(), "requests": 0, "prompt": 0,
                       "completion": 0, "ceiling": 0, "computed": 0.0, "seen": set()},
            )
            spell["active"] += 1
            spell["ceiling"] = max(spell["ceiling"], output_ceiling(self.catalog.get(name),
                                                                    options))
        result = None
        try:
            result = self.inner.run(batch)
            return result
        finally:
            endpoint = self.catalog.get(name)
            shares = shares_answers(options, endpoint)
            paid = paid_rows(keys, shares)
            if result is not None:  # rows answered without the model are not measured
                paid &= ~answered_cached(result)
            self._close(name, requests, keys, paid if shares else None, result)

    def _close(
        self, name: str, requests: list[str | None], keys: list[RowKey | None],
        paid: np.ndarray | None, result: pa.RecordBatch | None,
    ) -> None:
        """Count a batch into its endpoint's spell: its paid rows, one per distinct request of
        a call that does not sample (``paid``: None when it samples, every row is paid) in the
        whole spell; the spell ends when no batch is in flight."""
        with self._lock:
            spell = self._open[name]
            spell["active"] -= 1
            if result is not None:
                if paid is None:
                    paid = np.array([r is not None for r in requests], dtype=bool)
                else:
                    seen = spell["seen"]
                    for i in np.flatnonzero(paid):
                        if keys[i] in seen:
                            paid[i] = False
                        seen.add(keys[i])
                prompt, completion = spent_tokens(result, paid)
                rows = np.flatnonzero(paid)
                tokens = result.column("prompt_tokens").fill_null(0).to_numpy(
                    zero_copy_only=False)
                spell["computed"] += computed_tokens(
                    [requests[i] or "" for i in rows], [int(tokens[i]) for i in rows])
                spell["requests"] += len(rows)
                spell["prompt"] += prompt
                spell["completion"] += completion
            if spell["active"]:
                return
            del self._open[name]
        if spell["prompt"] or spell["completion"]:  # not answered from caches alone
            self.history.add(name, Spell(
                spell["requests"], spell["prompt"], spell["completion"],
                time.monotonic() - spell["start"], spell["ceiling"], round(spell["computed"]),
            ))
