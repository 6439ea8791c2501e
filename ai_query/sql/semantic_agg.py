"""``ai_agg(expr, instruction)`` and ``ai_summarize_agg(expr)``: semantic aggregates, pure parts.

A group's rows may not fit the model's context, so the aggregate is a map-reduce: the rows are
packed into chunks of at most :attr:`AggPlan.chunk_tokens` estimated tokens, each chunk gets a
partial answer (map), the partial answers are packed and combined the same way (reduce) until
one chunk is left, whose answer is the group's. Every row is in exactly one map chunk (a row
longer than a chunk is cut to fit, and still counted once). This module packs chunks and writes
prompts; :mod:`ai_query.udf.agg_rows` runs them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlglot import exp

from ai_query.errors import ConfigError, UnsupportedCallError

#: The semantic aggregates' parameters, in order.
AGGREGATE_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "ai_agg": ("expr", "instruction"),
    "ai_summarize_agg": ("expr",),
}
#: The Spark UDF behind both aggregates: (rows ARRAY<STRING>, instruction) -> STRING over
#: ``collect_list`` (Spark has no Python aggregate UDF that SQL can call by name).
SPARK_AGG_UDF = "ai_agg_rows"
#: ai_summarize_agg is ai_agg with this instruction.
SUMMARIZE_INSTRUCTION = "Summarize these rows in a few sentences."
#: Estimated tokens per chunk of rows (input only), sized so the prompt and the answer fit the
#: smallest bundled context (the deterministic engine's 512 words; SmolLM2's 2,048 tokens).
DEFAULT_CHUNK_TOKENS = 400
#: Characters per token assumed by the estimate; 3 over-counts English (about 4), so it is safe.
CHARS_PER_TOKEN = 3


def estimate_tokens(text: str) -> int:
    """A cautious token count for ``text`` (no tokenizer is needed to plan chunks)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True, kw_only=True)
class AggPlan:
    """How an aggregate packs rows and partial answers into prompts."""

    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    """Estimated tokens of rows (or partial answers) in one prompt (at least 8)."""

    def __post_init__(self) -> None:
        if self.chunk_tokens < 8:
            raise ConfigError(f"ai_agg: chunk_tokens must be >= 8, got {self.chunk_tokens}")

    @property
    def answer_tokens(self) -> int:
        """max_tokens of each call: a partial answer must leave room for another in a chunk."""
        return max(16, self.chunk_tokens // 4)

    def chunks(self, items: Sequence[str]) -> list[list[str]]:
        """``items`` packed in order into chunks within the budget; an item over half the
        budget is cut to fit half, so every chunk holds two or more items and reducing ends."""
        limit = max(1, self.chunk_tokens // 2 - 1) * CHARS_PER_TOKEN
        out: list[list[str]] = []
        used = 0
        for item in items:
            item = item[:limit]
            cost = estimate_tokens(item) + 1
            if out and used + cost <= self.chunk_tokens:
                out[-1].append(item)
                used += cost
            else:
                out.append([item])
                used = cost
        return out

    def final_prompt(self, instruction: str, items: Sequence[str], *, partial: bool) -> str:
        """The prompt that answers ``instruction`` over the whole group (one chunk)."""
        what = "partial results, each covering different rows of the group" if partial else "rows"
        return f"{instruction}\n\nThe {what}:\n{_bullets(items)}\n\nAnswer:"

    def map_prompt(self, instruction: str, items: Sequence[str], *, partial: bool) -> str:
        """The prompt that gives a partial answer for one chunk of a larger group."""
        what = "partial results" if partial else "rows"
        return (
            f"Task over a large group of rows: {instruction}\nHere are some of the group's "
            f"{what}. Give an intermediate result for these only, briefly, keeping every fact "
            f"the task needs.\n\n{_bullets(items)}\n\nIntermediate result:"
        )


def _bullets(items: Sequence[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def is_aggregate_call(node: exp.Expr) -> bool:
    """True when ``node`` calls ai_agg or ai_summarize_agg (any case)."""
    return isinstance(node, exp.Anonymous) and node.name.lower() in AGGREGATE_FUNCTIONS


def check_aggregate_call(node: exp.Anonymous) -> tuple[exp.Expression, exp.Expression]:
    """(rows expression, instruction expression) of an aggregate call.

    Raises:
        UnsupportedCallError: the wrong number of arguments, or named ones.
    """
    name = node.name.lower()
    params = AGGREGATE_FUNCTIONS[name]
    args = list(node.expressions)
    if len(args) != len(params) or any(isinstance(a, (exp.Kwarg, exp.PropertyEQ)) for a in args):
        raise UnsupportedCallError(
            f"{name}({', '.join(params)}) takes {len(params)} positional arguments, got {len(args)}"
        )
    instruction = args[1] if len(args) > 1 else exp.Literal.string(SUMMARIZE_INSTRUCTION)
    return args[0], instruction


def spark_aggregate(node: exp.Expression) -> exp.Expression:
    """An aggregate call as Spark runs it: ``ai_agg_rows(collect_list(CAST(expr AS STRING)),
    instruction)``; a pure rewrite (other nodes come back unchanged)."""
    if not isinstance(node, exp.Anonymous) or not is_aggregate_call(node):
        return node
    rows, instruction = check_aggregate_call(node)
    as_text = exp.Cast(this=rows.copy(), to=exp.DataType.build("STRING"))
    collected = exp.Anonymous(this="collect_list", expressions=[as_text])
    return exp.Anonymous(this=SPARK_AGG_UDF, expressions=[collected, instruction.copy()])
