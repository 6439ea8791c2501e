"""Budgets: the most tokens, or money, one query may spend; a query never goes past its budget.

A :class:`Budget` is a limit on tokens (prompt + generated) and/or on cost (the endpoints'
catalog ``price``; an endpoint without a price costs nothing). An :class:`Allowance` is what one
query has spent against its budget. :class:`BudgetedEngine` sends a row only when the row fits
in what is left, counting its prompt tokens (the endpoint's own tokenizer, from the engine's
preview) plus its output ceiling (``max_tokens``, :mod:`ai_query.engine.core.ceiling`), so the
budget holds even if every row generated its ceiling. Rows answered from a cache cost nothing.
When a row does not fit, the rows from there on are not sent: each gets the budget error as its
row error, in place (``failOnError => false`` shows it; otherwise it is the query's error).
After each slice is answered, its reservation is replaced by what it really used, so the
budget is spent on answers, not on ceilings.

:func:`check_estimate` refuses a query before it starts when EXPLAIN's estimate is already over.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ai_query.catalog import Endpoint
from ai_query.engine.core.arrow_types import to_arrow
from ai_query.engine.core.batch import (
    RowOutcome,
    align_results,
    answered_cached,
    read_request_batch,
    read_request_files,
    result_batch,
    stitch_results,
)
from ai_query.engine.core.ceiling import output_ceiling
from ai_query.engine.core.forwarding import ForwardingEngine
from ai_query.engine.core.memo import RowKey, row_keys
from ai_query.engine.core.preview import preview
from ai_query.engine.core.protocol import Engine
from ai_query.errors import BudgetExceededError, ConfigError
from ai_query.options import CallOptions
from ai_query.sql.response_format import resolve_output
from ai_query.tasks import Task

BUDGET_ERROR = "budget reached"
"""How every budget row error begins."""
BUDGET_METADATA_KEY = b"ai_query.budget"
"""Where a request batch carries its query's budget for the engine servers (:func:`tag_budget`)."""


class Budget(BaseModel):
    """The most one query may spend: tokens read and generated, and/or cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(default=None, ge=0)
    """Prompt plus generated tokens, over all the query's AI calls."""
    max_cost: float | None = Field(default=None, ge=0)
    """Cost at the endpoints' catalog prices (endpoints without a price cost nothing)."""

    @property
    def limited(self) -> bool:
        """Whether this budget limits anything."""
        return self.max_tokens is not None or self.max_cost is not None

    def describe(self) -> str:
        """The limits, as a user set them (``max_tokens 1,000, max_cost 0.5``)."""
        parts = []
        if self.max_tokens is not None:
            parts.append(f"max_tokens {self.max_tokens:,}")
        if self.max_cost is not None:
            parts.append(f"max_cost {self.max_cost:g}")
        return ", ".join(parts) or "no limit"


@dataclass(frozen=True)
class Spend:
    """What some rows used."""

    prompt_tokens: int
    completion_tokens: int
    cost: float


def parse_budget(given: Mapping[str, Any], names: Mapping[str, str]) -> Budget:
    """A budget from settings' values (``given``: by :class:`Budget` field; ``names``: each
    field's setting name, for the error).

    Raises:
        ConfigError: naming the settings when a value is not a number >= 0.
    """
    try:
        return Budget.model_validate(dict(given))
    except ValidationError as exc:
        shown = ", ".join(f"{names[k]} = {v!r}" for k, v in given.items())
        raise ConfigError(
            f"invalid budget ({shown}): {names['max_tokens']} takes a whole number of tokens "
            f">= 0, {names['max_cost']} a cost >= 0"
        ) from exc


class Allowance:
    """What one query has spent, and holds reserved for rows in flight, under its budget
    (thread-safe: DuckDB and Spark answer chunks on several threads)."""

    def __init__(self, budget: Budget, scope: str = "the query") -> None:
        self.budget = budget
        self.scope = scope
        self.prompt_tokens = 0
        """Tokens read by the rows answered."""
        self.completion_tokens = 0
        """Tokens they generated."""
        self.cost = 0.0
        """Cost spent."""
        self.refused = 0
        """Rows not sent because they did not fit."""
        self._held_tokens = 0
        self._held_cost = 0.0
        self._in_flight = 0
        self._changed = threading.Condition()
        self._sent: set[int] = set()

    def unsent(self, call: str | None, requests: Sequence[RowKey | None]) -> np.ndarray:
        """Which requests this query has not sent yet under ``call`` (a call whose answers do
        not sample; None: every row is its own request): the engine answers a repeat from
        its memo, so a query pays once per distinct request, as EXPLAIN counts."""
        if call is None:
            return np.array([r is not None for r in requests], dtype=bool)
        with self._changed:  # reentrant: mark_sent holds it
            return np.array(
                [r is not None and hash((call, r)) not in self._sent for r in requests],
                dtype=bool,
            )

    def mark_sent(self, call: str | None, requests: Sequence[RowKey | None]) -> np.ndarray:
        """Remember ``requests`` as sent under ``call``; which of them were not sent before."""
        with self._changed:
            unsent = self.unsent(call, requests)
            if call is not None:
                self._sent.update(hash((call, r)) for r in requests if r is not None)
            return unsent

    def admit(
        self, call: str | None, requests: Sequence[RowKey | None], tokens: list[int],
        costs: list[float],
    ) -> int:
        """Reserve the longest run of rows, from the first, that fits in what is left, and mark
        them sent; wait for rows in flight to settle when none fits but some may free room;
        0 when none will. ``tokens``/``costs`` hold each row's reservation; a row whose
        request another batch sent meanwhile is zeroed there (it costs nothing)."""
        with self._changed:
            while True:
                if call is not None:
                    for i, r in enumerate(requests):
                        if tokens[i] and hash((call, r)) in self._sent:
                            tokens[i], costs[i] = 0, 0.0
                fits = self._fitting(tokens, costs)
                if fits or not self._in_flight:
                    self._held_tokens += int(sum(tokens[:fits]))
                    self._held_cost += float(sum(costs[:fits]))
                    self._in_flight += bool(fits)
                    if call is not None:
                        self._sent.update(hash((call, r)) for r in requests[:fits] if r)
                    return fits
                self._changed.wait(timeout=1.0)

    def _fitting(self, tokens: Sequence[int], costs: Sequence[float]) -> int:
        fits = len(tokens)
        if self.budget.max_tokens is not None:
            room = self.budget.max_tokens - self.tokens - self._held_tokens
            fits = min(fits, int(np.searchsorted(np.cumsum(tokens), room, side="right")))
        if self.budget.max_cost is not None:
            room_cost = self.budget.max_cost - self.cost - self._held_cost + 1e-12
            fits = min(fits, int(np.searchsorted(np.cumsum(costs), room_cost, side="right")))
        return fits

    @property
    def tokens(self) -> int:
        """Tokens spent: read and generated."""
        return self.prompt_tokens + self.completion_tokens

    def settle(self, held_tokens: int, held_cost: float, used: Spend) -> None:
        """Replace a reservation (:meth:`admit` that admitted rows) by what its rows used."""
        with self._changed:
            self._held_tokens -= held_tokens
            self._held_cost -= held_cost
            self._in_flight -= 1
            self.count(used)
            self._changed.notify_all()

    def count(self, used: Spend) -> None:
        """Add what rows used."""
        with self._changed:
            self.prompt_tokens += used.prompt_tokens
            self.completion_tokens += used.completion_tokens
            self.cost += used.cost

    def spent_out(self) -> bool:
        """Whether nothing is left (a limit reached)."""
        with self._changed:
            tokens = self.budget.max_tokens
            cost = self.budget.max_cost
            return (tokens is not None and self.tokens >= tokens) or (
                cost is not None and self.cost >= cost)

    def refuse(self, rows: int) -> None:
        """Count rows not sent."""
        with self._changed:
            self.refused += rows

    def exhausted(
        self, what: str = "this row was not sent (its prompt plus max_tokens would not fit)"
    ) -> str:
        """The error of what was not sent: a row by default, ``what`` says otherwise."""
        spent = f"{self.tokens:,} tokens" + (
            f", cost {self.cost:.6g}" if self.budget.max_cost is not None else ""
        )
        return (
            f"{BUDGET_ERROR}: {self.scope} allows {self.budget.describe()} and has used "
            f"{spent}; {what}"
        )


class BudgetedEngine(ForwardingEngine):
    """Sends rows only while they fit in the current :attr:`allowance`, and counts what they
    spend there (None: no limit, nothing counted)."""

    def __init__(self, inner: Engine, allowance: Allowance | None = None) -> None:
        super().__init__(inner)
        self.allowance = allowance
        """The allowance of the query running now (a connection sets one per statement)."""

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Answer the rows that fit; the rest carry the budget error."""
        allowance = self.allowance
        if allowance is None:
            return self.inner.run(batch)
        texts, options = read_request_batch(batch)
        requests = row_keys(texts, read_request_files(batch))  # a file is part of the request
        endpoint = self.catalog.get(options.endpoint)
        call = options.to_json() if shares_answers(options, endpoint) else None
        paid = paid_rows(requests, call is not None)
        if not allowance.budget.limited:  # spend is counted from the answers, none held back
            result = align_results(self.inner.run(batch), len(requests))
            hits = answered_cached(result)  # a row another batch computed first is one of them
            computed = [None if hit else r for r, hit in zip(requests, hits, strict=True)]
            paid &= allowance.mark_sent(call, computed)
            allowance.count(_used(result, paid, endpoint))
            return result
        paid &= allowance.unsent(call, requests)
        ceiling = output_ceiling(endpoint, options)
        tokens, costs = _reservations(self.inner, batch, paid, endpoint, ceiling)
        parts: list[tuple[pa.RecordBatch, Sequence[int]]] = []
        start, n = 0, len(requests)
        while start < n:
            rest_tokens, rest_costs = tokens[start:], costs[start:]
            fits = allowance.admit(call, requests[start:], rest_tokens, rest_costs)
            tokens[start:], costs[start:] = rest_tokens, rest_costs
            paid[start:] &= np.array(rest_tokens, dtype=bool)  # zeroed: sent by another batch
            if not fits:
                break
            held_tokens = int(sum(tokens[start : start + fits]))
            held_cost = float(sum(costs[start : start + fits]))
            used = Spend(held_tokens, 0, held_cost)  # if it fails: as if all was used
            try:
                answered = align_results(self.inner.run(batch.slice(start, fits)), fits)
                used = _used(answered, paid[start : start + fits], endpoint)
            finally:
                allowance.settle(held_tokens, held_cost, used)
            parts.append((answered, range(start, start + fits)))
            start += fits
        if start < n:
            output = resolve_output(options.return_type, options.response_format, endpoint.task)
            refused = [
                None if requests[i] is None else RowOutcome(error=allowance.exhausted())
                for i in range(start, n)
            ]
            allowance.refuse(sum(r is not None for r in refused))
            parts.append((result_batch(refused, to_arrow(output.sql_type)), range(start, n)))
        return parts[0][0] if len(parts) == 1 else stitch_results(parts)


def shares_answers(options: CallOptions, endpoint: Endpoint) -> bool:
    """Whether equal requests of this call get one answer (embeddings, and chat calls that do
    not sample): the engine answers them with one model call."""
    return endpoint.task == Task.EMBEDDINGS or options.model_parameters.deterministic


def paid_rows(requests: Sequence[RowKey | None], shares: bool) -> np.ndarray:
    """Which rows of a request batch cost a model call: not NULL, and where equal requests
    share one answer (:func:`shares_answers`), the first row of each request (text and file)."""
    seen: set[RowKey] = set()
    paid = np.zeros(len(requests), dtype=bool)
    for i, text in enumerate(requests):
        if text is not None and not (shares and text in seen):
            paid[i] = True
            seen.add(text)
    return paid


def _reservations(
    engine: Engine, batch: pa.RecordBatch, paid: np.ndarray, endpoint: Endpoint, ceiling: int
) -> tuple[list[int], list[float]]:
    """Per row, the tokens and cost to hold before sending it: prompt tokens plus the output
    ceiling; nothing for rows not paid for (:func:`paid_rows`) or answered from a cache."""
    seen = preview(engine, batch).to_pydict()
    tokens = [
        int(prompt) + ceiling if pays and not cached and prompt is not None else 0
        for prompt, cached, pays in zip(seen["prompt_tokens"], seen["cached"], paid, strict=True)
    ]
    price = endpoint.price
    if price is None:
        return tokens, [0.0] * len(tokens)
    return tokens, [0.0 if not t else price.cost(t - ceiling, ceiling) for t in tokens]


def _used(result: pa.RecordBatch, paid: np.ndarray, endpoint: Endpoint) -> Spend:
    """What an answered result batch used (its ``paid`` rows' tokens)."""
    prompt, completion = spent_tokens(result, paid)
    cost = endpoint.price.cost(prompt, completion) if endpoint.price is not None else 0.0
    return Spend(prompt, completion, cost)


def spent_tokens(result: pa.RecordBatch, paid: np.ndarray) -> tuple[int, int]:
    """Prompt and completion tokens of a result batch's ``paid`` rows (:func:`paid_rows`)."""
    prompt = result.column("prompt_tokens").fill_null(0).to_numpy(zero_copy_only=False)
    completion = result.column("completion_tokens").fill_null(0).to_numpy(zero_copy_only=False)
    return int(prompt[paid].sum()), int(completion[paid].sum())


def budget_tag(budget: Budget) -> str:
    """A new query's budget tag: the limits and an id that names the query on the servers."""
    return json.dumps({"id": uuid.uuid4().hex, **budget.model_dump()})


def tag_budget(batch: pa.RecordBatch, tag: str) -> pa.RecordBatch:
    """``batch`` carrying a query's budget tag (:func:`budget_tag`), for the engine servers to
    hold the query to, across all the processes that send its rows (Spark's workers)."""
    return batch.replace_schema_metadata(
        {**(batch.schema.metadata or {}), BUDGET_METADATA_KEY: tag.encode()}
    )


def read_budget_tag(batch: pa.RecordBatch) -> tuple[str, Budget] | None:
    """The query id and budget a request batch carries, or None.

    Raises:
        ConfigError: for a malformed tag.
    """
    raw = (batch.schema.metadata or {}).get(BUDGET_METADATA_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return str(data.pop("id")), Budget.model_validate(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"malformed query budget on a request batch: {exc}") from None


class BudgetTagging(ForwardingEngine):
    """Marks every request batch with a query's budget tag (:func:`tag_budget`)."""

    def __init__(self, inner: Engine, tag: str) -> None:
        super().__init__(inner)
        self.tag = tag

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The inner engine's answer to the tagged batch."""
        return self.inner.run(tag_budget(batch, self.tag))


def check_estimate(budget: Budget, tokens: int, cost: float | None, what: str) -> None:
    """Refuse a query whose estimate (``what``: how it was made) is over ``budget``.

    Raises:
        BudgetExceededError: naming the estimate and the limit it passes.
    """
    over = []
    if budget.max_tokens is not None and tokens > budget.max_tokens:
        over.append(f"{tokens:,} tokens > max_tokens {budget.max_tokens:,}")
    if budget.max_cost is not None and cost is not None and cost > budget.max_cost:
        over.append(f"cost {cost:.6g} > max_cost {budget.max_cost:g}")
    if over:
        raise BudgetExceededError(
            f"refused before it started: the estimate is over the query's budget "
            f"({'; '.join(over)}); estimated {what}. Raise the budget or narrow the query "
            "(EXPLAIN shows each AI call's share)."
        )
