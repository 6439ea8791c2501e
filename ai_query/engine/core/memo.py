"""A bounded in-memory memo of recent greedy answers, so that duplicate requests in one query
run once even when they arrive in different chunks (DuckDB's 2048-row chunks, Spark's batches).

Only deterministic (temperature 0) answers without errors are kept; the oldest are dropped past
``max_entries``. It lives on the engine loop's thread, so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ai_query.engine.core.batch import RowOutcome


class ResultMemo:
    """Least-recently-used map of (call key, request text) -> answer."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, str], RowOutcome] = OrderedDict()
        self.hits = 0
        """Answers served from the memo."""

    def get(self, key: tuple[str, str]) -> RowOutcome | None:
        """The remembered answer, or None."""
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return found

    def holds(self, key: tuple[str, str]) -> bool:
        """Whether an answer for ``key`` is remembered (without counting a hit)."""
        return key in self._items

    def put(self, key: tuple[str, str], outcome: RowOutcome) -> None:
        """Remember a successful answer (vectors are kept compactly as float32 arrays)."""
        if outcome.error is not None or self.max_entries <= 0:
            return
        if (
            isinstance(outcome.value, list)
            and outcome.value
            and isinstance(outcome.value[0], float)
        ):
            outcome = RowOutcome(
                np.asarray(outcome.value, dtype=np.float32),
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
            )
        self._items[key] = outcome
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
