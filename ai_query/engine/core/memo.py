"""A bounded in-memory memo of recent greedy answers, so that duplicate requests in one query
run once even when they arrive in different chunks (DuckDB's 2048-row chunks, Spark's batches).

Only deterministic (temperature 0) answers without errors are kept; the oldest are dropped past
``max_entries``. It lives on the engine loop's thread, so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ai_query.engine.core.batch import RowOutcome
from ai_query.engine.core.files import file_digest

#: What identifies a request row within a call: its text and its file's digest (None: no file).
RowKey = tuple[str, str | None]
#: A memo entry's key: the call (its options as JSON) and the row.
MemoKey = tuple[str, RowKey]


def row_key(text: str, data: bytes | None) -> RowKey:
    """The key of a row with ``text`` and file ``data`` (None: no file)."""
    return (text, None if data is None else file_digest(data))


def row_keys(
    requests: Sequence[str | None], files: Sequence[bytes | None] | None
) -> list[RowKey | None]:
    """Each row's key (None for a NULL request)."""
    return [
        None if text is None else row_key(text, None if files is None else files[i])
        for i, text in enumerate(requests)
    ]


class ResultMemo:
    """Least-recently-used map of (call key, request row) -> answer."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[MemoKey, RowOutcome] = OrderedDict()
        self.hits = 0
        """Answers served from the memo."""

    def get(self, key: MemoKey) -> RowOutcome | None:
        """The remembered answer, or None."""
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return found

    def holds(self, key: MemoKey) -> bool:
        """Whether an answer for ``key`` is remembered (without counting a hit)."""
        return key in self._items

    def put(self, key: MemoKey, outcome: RowOutcome) -> None:
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
