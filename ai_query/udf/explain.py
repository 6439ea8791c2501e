"""EXPLAIN for AI calls: what a statement's AI calls would send, read and cost, with no model call.

The statement runs on its own plan, so ``WHERE``, ``LIMIT`` and joins act exactly as they will,
but against a :class:`RecordingEngine`: it records every request batch the AI functions send and
answers with stand-ins of the right type (empty text for plain text results; the deterministic
backend's answers for typed, choice and vector results), never a model. Then
:func:`explain_calls` previews each recorded call's distinct requests on the real engine
(:mod:`ai_query.engine.core.preview`: tokens from the endpoint's own tokenizer, cache hits) and
estimates its output tokens and wall time from this machine's usage history
(:mod:`ai_query.udf.usage`), and its cost from the endpoint's catalog ``price``.

Rows that reach a call only through another AI answer (after an AI predicate, inside another AI
call) depend on answers not known before the statement runs: their counts come from the
stand-ins, and the call's ``note`` says so. ``ai_filter``'s stand-in lets every row pass, so
behind ``ai_filter`` alone the figures are upper bounds (the note says that too).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ai_query.catalog import Catalog
from ai_query.engine.core.batch import (
    request_batch,
)
from ai_query.engine.core.ceiling import output_ceiling
from ai_query.engine.core.forwarding import ForwardingEngine
from ai_query.engine.core.preview import cache_only, preview
from ai_query.engine.core.protocol import Engine, wants_slices
from ai_query.engine.recording import CallRecord
from ai_query.options import CallOptions
from ai_query.udf.usage import UsageHistory, computed_tokens

#: Distinct requests of one call counted in full; above this, a random sample of this many is
#: counted and the rest estimated from their characters (with a 95% error bound).
COUNT_IN_FULL = 20_000

EXPLAIN_SCHEMA = pa.schema([
    ("call", pa.int32()),
    ("endpoint", pa.string()),
    ("model", pa.string()),
    ("rows", pa.int64()),
    ("null_rows", pa.int64()),
    ("distinct_requests", pa.int64()),
    ("cached", pa.int64()),
    ("to_send", pa.int64()),
    ("prompt_tokens", pa.int64()),
    ("prompt_tokens_error", pa.int64()),
    ("counted", pa.string()),
    ("max_output_tokens", pa.int64()),
    ("expected_output_tokens", pa.int64()),
    ("estimated_seconds", pa.float64()),
    ("estimated_cost", pa.float64()),
    ("currency", pa.string()),
    ("note", pa.string()),
])


class EngineSwitch(ForwardingEngine):
    """An engine that forwards to another, which :meth:`using` swaps for a while (the SQL
    functions of a connection are bound to this one)."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()

    @property
    def wants_slices(self) -> bool:
        """The current engine's wish (:func:`~ai_query.engine.core.protocol.wants_slices`)."""
        return wants_slices(self.inner)

    @contextmanager
    def using(self, engine: Engine) -> Iterator[None]:
        """Forward to ``engine`` inside (one statement at a time: the connection's)."""
        with self._lock:
            previous, self.inner = self.inner, engine
            try:
                yield
            finally:
                self.inner = previous


def explain_calls(
    calls: Sequence[CallRecord],
    engine: Engine,
    catalog: Catalog,
    history: UsageHistory,
    *,
    deciding: set[str] | frozenset[str] = frozenset(),
) -> pa.Table:
    """One row per call (:data:`EXPLAIN_SCHEMA`): its rows, distinct requests, cache hits and
    prompt tokens on ``engine`` (previews only), and its estimated output, time and cost."""
    rows = [
        _explain(i + 1, call, engine, catalog, history, _dependence_note(deciding))
        for i, call in enumerate(calls)
    ]
    return pa.Table.from_pylist(rows, schema=EXPLAIN_SCHEMA)


def _explain(
    number: int,
    call: CallRecord,
    engine: Engine,
    catalog: Catalog,
    history: UsageHistory,
    dependence: str | None,
) -> dict[str, Any]:
    options = call.options
    endpoint = catalog.get(options.endpoint)
    requests = call.requests
    distinct, images = _distinct_requests(requests, call.file_digests)
    tokens, error, counted, to_send, computed = _prompt_tokens(engine, options, distinct)
    ceiling = output_ceiling(endpoint, options)
    per_request = history.output_per_request(endpoint.name, ceiling) if ceiling else 0.0
    expected = None if per_request is None else per_request * to_send
    seconds = history.seconds(
        endpoint.name, to_send, computed,
        expected if expected is not None else ceiling * to_send, ceiling,
    )
    notes = []
    if dependence is not None:
        notes.append(dependence)
    if images:
        notes.append("prompt tokens count the text: each image adds the model's image tokens, "
                     "and a request is its text and its image")
    if expected is None and ceiling:
        notes.append("no history for this endpoint: no expected output or time (cost at the "
                     "max_tokens ceiling)")
    price = endpoint.price
    cost = None
    if price is not None:
        cost = price.cost(tokens, expected if expected is not None else ceiling * to_send)
    entity = endpoint.config.served_entities[0]
    model = entity.external_model.name if entity.external_model else str(entity.entity_name)
    return {
        "call": number,
        "endpoint": endpoint.name,
        "model": model,
        "rows": len(requests),
        "null_rows": requests.null_count,
        "distinct_requests": len(distinct),
        "cached": len(distinct) - to_send,
        "to_send": to_send,
        "prompt_tokens": tokens,
        "prompt_tokens_error": error,
        "counted": counted,
        "max_output_tokens": ceiling * to_send,
        "expected_output_tokens": None if expected is None else round(expected),
        "estimated_seconds": seconds,
        "estimated_cost": cost,
        "currency": price.currency if price is not None else None,
        "note": "; ".join(notes) or None,
    }


def _dependence_note(deciding: set[str] | frozenset[str]) -> str | None:
    """What the figures are when AI answers decide rows (``deciding``: those functions)."""
    if not deciding:
        return None
    if deciding == {"ai_filter"}:
        return ("rows behind ai_filter depend on its answers: an upper bound (every row "
                "counted as passing it)")
    return ("rows after an AI predicate or inside an AI call depend on answers not known "
            "before it runs: counted with stand-in answers")


def estimated_spend(explained: pa.Table) -> tuple[int, float | None, str]:
    """What a statement is expected to spend, from its EXPLAIN (:func:`explain_calls`): tokens
    (prompt plus expected output; the max_tokens ceiling where there is no history), cost
    (None when no endpoint has a price), and how the estimate was made, in words."""
    calls = explained.to_pylist()
    prompt = sum(c["prompt_tokens"] for c in calls)
    known = [c["expected_output_tokens"] for c in calls if c["expected_output_tokens"] is not None]
    ceilings = sum(c["max_output_tokens"] for c in calls if c["expected_output_tokens"] is None)
    priced = [c for c in calls if c["estimated_cost"] is not None]
    what = f"{prompt:,} prompt tokens"
    if known:
        what += f" + {sum(known):,} output tokens expected from this machine's history"
    if ceilings:
        what += f" + {ceilings:,} output tokens at the max_tokens ceiling (no history yet)"
    cost = sum(c["estimated_cost"] for c in priced) if priced else None
    if cost is not None:
        what += f", cost {cost:.6g} {priced[0]['currency']}"
    return prompt + sum(known) + ceilings, cost, what


def _distinct_requests(requests: pa.Array, digests: pa.Array) -> tuple[pa.Array, bool]:
    """The texts of the distinct requests (text, and file digest where a row has a file: the
    same text with two images is two requests), and whether any row has a file."""
    if digests.null_count == len(digests):
        return pc.unique(requests.drop_null()), False
    rows = pa.table({"text": requests, "file": digests}).filter(pc.is_valid(requests))
    pairs = rows.group_by(["text", "file"], use_threads=False).aggregate([])
    return pairs.column("text").combine_chunks(), True


def _prompt_tokens(
    engine: Engine, options: CallOptions, distinct: pa.Array
) -> tuple[int, int, str, int, float]:
    """(prompt tokens of the requests to send, their 95% error bound, how they were counted,
    how many requests are sent: the distinct ones the engine would not answer from a cache,
    and the prompt tokens a prefix-caching engine computes for them: :func:`computed_tokens`).

    Up to :data:`COUNT_IN_FULL` distinct requests are previewed whole. Above, a random sample
    of that many is: its tokens fit tokens = a + b * characters for the rest; when the sample
    holds cache hits, every request is then checked against the cache (exact), else none is
    taken as cached (with 0 hits in 20,000, under 0.02% are, at 95%).
    """
    n = len(distinct)
    if not n:
        return 0, 0, "exact", 0, 0.0
    if n <= COUNT_IN_FULL:
        seen = preview(engine, request_batch(distinct, options)).to_pydict()
        send = [i for i, hit in enumerate(seen["cached"]) if not hit]
        exact = all(seen["exact"])
        counts = [seen["prompt_tokens"][i] for i in send]
        texts = distinct.take(pa.array(send, pa.int64())).to_pylist()
        how = "exact" if exact else "estimate (no tokenizer)"
        return sum(counts), 0, how, len(send), computed_tokens(texts, counts)
    picked = np.sort(np.random.default_rng(0).choice(n, COUNT_IN_FULL, replace=False))
    sample = distinct.take(pa.array(picked))
    seen = preview(engine, request_batch(sample, options)).to_pydict()
    fresh = [i for i, hit in enumerate(seen["cached"]) if not hit]
    send = distinct
    if len(fresh) < len(picked):  # some are cached: find which, exactly
        hits = preview(engine, cache_only(request_batch(distinct, options))).column("cached")
        send = distinct.filter(pc.invert(hits.fill_null(False)))
    if not len(send) or not fresh:
        return 0, 0, "exact", len(send), 0.0
    counts = [seen["prompt_tokens"][i] for i in fresh]
    fresh_texts = sample.take(pa.array(fresh))
    total, error = _extrapolate(fresh_texts, counts, send)
    how = f"sample of {len(picked)}" if all(seen["exact"]) else "estimate (no tokenizer)"
    share = computed_tokens(fresh_texts.to_pylist(), counts) / max(sum(counts), 1)
    return total, error, how, len(send), total * share


def _extrapolate(sample: pa.Array, counts: list[int], texts: pa.Array) -> tuple[int, int]:
    """Total tokens of ``texts`` from the counted ``sample``: tokens = a + b * characters,
    fitted on the sample; with a 95% bound from the fit's residuals (the sample's own error and
    the other texts' scatter)."""
    x = pc.utf8_length(sample).to_numpy(zero_copy_only=False).astype(np.float64)
    y = np.array(counts, dtype=np.float64)
    design = np.column_stack([np.ones_like(x), x])
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    chars = float(pc.sum(pc.utf8_length(texts)).as_py() or 0)
    sigma = float(np.std(y - (a + b * x), ddof=2)) if len(x) > 2 else float(np.std(y))
    n, s = len(texts), len(x)
    total = float(a * n + b * chars)
    error = 1.96 * sigma * (n / np.sqrt(s) + np.sqrt(max(n - s, 0)))
    return round(total), int(np.ceil(error))
