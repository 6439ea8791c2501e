"""What a request batch would cost, without calling a model: its prompt tokens and cache hits.

:func:`preview` answers a request batch (:mod:`ai_query.engine.core.batch`) with one row per
request row, in order:

=============  =======  ===================================================================
column         type     meaning
=============  =======  ===================================================================
row            int64    index of the request row
prompt_tokens  int64    tokens the model would read (its own tokenizer and chat template,
                        as the engine renders the request); NULL for a NULL request
exact          bool     True when counted with the model's tokenizer, False when estimated
                        (a provider without a tokenizer here: :func:`estimate_tokens`)
cached         bool     True when the engine would answer the row without the model (its
                        result cache or its memo of recent greedy answers)
=============  =======  ===================================================================

An engine that can say more implements :class:`Previewing`; any other engine gets the
estimate, with nothing cached. A batch marked by :func:`cache_only` asks for the ``cached``
column alone (``prompt_tokens`` NULL): the cheap question, for inputs too large to count whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from ai_query.engine.core.batch import read_request_batch

if TYPE_CHECKING:
    from ai_query.engine.core.protocol import Engine

#: Characters per token of the estimate used where no tokenizer is at hand (English text with
#: the usual BPE vocabularies runs 3.5-4.5).
CHARS_PER_TOKEN = 4.0
#: Tokens a chat template adds around one user message, in the estimate.
TEMPLATE_TOKENS = 8

_CACHE_ONLY_KEY = b"ai_query.preview.cache_only"

PREVIEW_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("exact", pa.bool_()),
        pa.field("cached", pa.bool_()),
    ]
)


@runtime_checkable
class Previewing(Protocol):
    """An engine that previews request batches itself (exact token counts, cache hits)."""

    def preview(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The preview of ``batch`` (see the module docstring); calls no model."""
        ...


def cache_only(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` marked to ask its preview for cache hits alone (no token counts)."""
    metadata = {**(batch.schema.metadata or {}), _CACHE_ONLY_KEY: b"1"}
    return batch.replace_schema_metadata(metadata)


def counts_tokens(batch: pa.RecordBatch) -> bool:
    """Whether ``batch``'s preview should count tokens (not marked by :func:`cache_only`)."""
    return _CACHE_ONLY_KEY not in (batch.schema.metadata or {})


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate of the prompt tokens of one chat message ``text``."""
    return TEMPLATE_TOKENS + math.ceil(len(text) / CHARS_PER_TOKEN)


def preview(engine: Engine, batch: pa.RecordBatch) -> pa.RecordBatch:
    """The preview of ``batch`` on ``engine``: the engine's own where it has one, else the
    estimate (after the engine has checked the call: an unknown endpoint fails here too)."""
    if isinstance(engine, Previewing):
        return engine.preview(batch)
    requests, options = read_request_batch(batch)
    engine.catalog.get(options.endpoint)
    counting = counts_tokens(batch)
    return preview_batch(
        [None if r is None or not counting else estimate_tokens(r) for r in requests],
        exact=False,
        cached=False,
    )


def preview_batch(
    tokens: Sequence[int | None],
    *,
    exact: bool | Sequence[bool],
    cached: bool | Sequence[bool],
) -> pa.RecordBatch:
    """A preview batch: row i has ``tokens[i]`` (None for a NULL request)."""
    n = len(tokens)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.arange(n, dtype=np.int64)),
            pa.array(tokens, pa.int64()),
            pa.array([exact] * n if isinstance(exact, bool) else list(exact), pa.bool_()),
            pa.array([cached] * n if isinstance(cached, bool) else list(cached), pa.bool_()),
        ],
        schema=PREVIEW_SCHEMA,
    )
