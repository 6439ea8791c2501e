"""What the semantic aggregate UDFs do with their groups: hierarchical map-reduce on an engine.

Shared by DuckDB (``list(expr)`` per group) and Spark (``collect_list(expr)``). All groups of a
UDF call advance level by level together, so each level is one engine request batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ai_query.engine.core.batch import align_results, raise_first_error, request_batch
from ai_query.engine.core.protocol import Engine
from ai_query.errors import ConfigError
from ai_query.options import CallOptions, ModelParameters
from ai_query.sql.semantic_agg import AggPlan


def answer_groups(
    engine: Engine,
    endpoint: str,
    groups: Sequence[Sequence[Any] | None],
    instructions: Sequence[str | None],
    plan: AggPlan | None = None,
) -> list[str | None]:
    """One answer per group: ``instruction`` applied to the group's non-NULL rows.

    Args:
        engine: the engine calls run on.
        endpoint: the chat endpoint.
        groups: each group's rows (NULLs are skipped; a group without rows gives NULL).
        instructions: each group's instruction.
        plan: chunk sizes (default :class:`AggPlan`).

    Raises:
        ConfigError: a NULL instruction for a group with rows.
        RowError: a failed call, naming the endpoint and the cause.
    """
    plan = plan or AggPlan()
    options = CallOptions(
        endpoint=endpoint, model_parameters=ModelParameters(max_tokens=plan.answer_tokens)
    )
    # Each open group: (index, items, whether the items are partial answers).
    state: dict[int, tuple[list[str], bool]] = {}
    out: list[str | None] = [None] * len(groups)
    for i, rows in enumerate(groups):
        items = [str(v) for v in (rows or []) if v is not None]
        if not items:
            continue
        if instructions[i] is None:
            raise ConfigError("ai_agg: the instruction is NULL")
        state[i] = (items, False)
    while state:
        prompts: list[str] = []
        owners: list[tuple[int, bool]] = []  # (group, final)
        for i, (items, partial) in state.items():
            instruction = str(instructions[i])
            chunks = plan.chunks(items)
            if len(chunks) == 1:
                prompts.append(plan.final_prompt(instruction, chunks[0], partial=partial))
                owners.append((i, True))
            else:
                for chunk in chunks:
                    prompts.append(plan.map_prompt(instruction, chunk, partial=partial))
                    owners.append((i, False))
        answers = _run(engine, prompts, options)
        partials: dict[int, list[str]] = {}
        for (i, final), answer in zip(owners, answers, strict=True):
            text = "" if answer is None else str(answer).strip()
            if final:
                out[i] = text
            else:
                partials.setdefault(i, []).append(text)
        state = {i: (items, True) for i, items in partials.items()}
    return out


def _run(engine: Engine, prompts: list[str], options: CallOptions) -> list[Any]:
    result = align_results(engine.run(request_batch(list(prompts), options)), len(prompts))
    raise_first_error(result, options.endpoint, 0)
    return result.column("result").to_pylist()
