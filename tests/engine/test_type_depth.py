"""Nested result types at the limit the plan-time check allows (ai_query.sql.types.MAX_TYPE_DEPTH)
cross Arrow as the engine server sends them, and deeper ones are refused before any row runs
(fast: a stand-in model that fills the type with one element per level)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pyarrow as pa
import pytest

import ai_query
from ai_query.catalog import Catalog, ServedEntity
from ai_query.engine.backends.backend import (
    Completion,
    CompletionChunk,
    EmbeddingResult,
    GenerationRequest,
)
from ai_query.engine.backends.deterministic import DeterministicBackend
from ai_query.engine.core.arrow_types import to_arrow
from ai_query.engine.local import LocalEngine
from ai_query.engine.process.supervision import EngineHealth, EngineState
from ai_query.errors import ConfigError
from ai_query.options import CallOptions
from ai_query.sql.types import MAX_TYPE_DEPTH, SQLType, parse_return_type
from ai_query.udf.rows import answer_call
from tests.udf.counting import CountingEngine

CHAT = "smollm2-135m-instruct"


def fill(schema: dict[str, Any]) -> Any:
    """A value of ``schema`` with one element per container (the deterministic engine's two
    per level would make 2**24 values)."""
    if schema.get("type") == "array":
        return [fill(schema["items"])]
    if "properties" in schema:
        return {name: fill(sub) for name, sub in schema["properties"].items()}
    if isinstance(schema.get("additionalProperties"), dict):
        return {"k": fill(schema["additionalProperties"])}
    return "x"


class OneEach:
    """A model that answers structured output with :func:`fill` of its schema."""

    def __init__(self, entity: ServedEntity) -> None:
        self.entity = entity

    async def complete(self, text: str, request: GenerationRequest) -> Completion:
        assert request.json_schema is not None
        return Completion(json.dumps(fill(request.json_schema)), 1, 1, "stop")

    async def stream(self, text: str, request: GenerationRequest) -> AsyncIterator[CompletionChunk]:
        yield (await self.complete(text, request)).as_chunk()

    async def embed_many(self, texts: Sequence[str]) -> list[EmbeddingResult]:
        raise NotImplementedError

    def health(self) -> EngineHealth:
        return EngineHealth(EngineState.READY)

    async def close(self) -> None:
        return None


class OverArrowIPC:
    """An engine whose result batches cross an Arrow IPC stream, as Flight sends them."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine
        self.catalog = engine.catalog

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        result = self.engine.run(batch)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, result.schema) as writer:
            writer.write_batch(result)
        return pa.ipc.open_stream(sink.getvalue()).read_next_batch()

    def close(self) -> None:
        self.engine.close()


def nested(kind: str, depth: int) -> str:
    inner = "STRING"
    for level in range(depth):
        if kind == "MIXED":
            kind_here = ("ARRAY", "STRUCT", "MAP")[level % 3]
        else:
            kind_here = kind
        inner = {"ARRAY": f"ARRAY<{inner}>", "STRUCT": f"STRUCT<a: {inner}>",
                 "MAP": f"MAP<STRING, {inner}>"}[kind_here]
    return inner


@pytest.mark.parametrize("fail_on_error", [True, False], ids=["failOnError", "errors-as-values"])
@pytest.mark.parametrize("kind", ["ARRAY", "STRUCT", "MAP", "MIXED"])
def test_the_deepest_type_allowed_crosses_arrow_ipc(kind: str, fail_on_error: bool) -> None:
    ddl = nested(kind, MAX_TYPE_DEPTH)
    engine = OverArrowIPC(LocalEngine(Catalog.default(), backend_factory=OneEach))
    options = CallOptions(endpoint=CHAT, return_type=ddl, fail_on_error=fail_on_error)
    [text] = answer_call(engine, ["hi"], options).texts
    assert text is not None
    expected = fill(parse_return_type(ddl).to_json_schema())
    value = json.loads(text)
    assert (value if fail_on_error else value["result"]) == expected


def test_arrow_refuses_the_nesting_the_limit_keeps_out() -> None:
    # A MAP is two Arrow levels: 32 nested MAPs pass no Arrow IPC reader; hence the limit of 24.
    deep = SQLType.string()
    for _ in range(32):  # built directly: only parsing DDL checks the depth
        deep = SQLType.map(SQLType.string(), deep)
    typ = to_arrow(deep)
    value: Any = "x"
    for _ in range(32):
        value = [("k", value)]
    batch = pa.record_batch([pa.array([value], type=typ)], names=["result"])
    with pytest.raises(pa.ArrowInvalid, match="Max recursion depth"):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)


def test_a_type_too_deep_fails_the_query_once_before_any_row_runs() -> None:
    counting: Any = CountingEngine(
        LocalEngine(Catalog.default(), backend_factory=DeterministicBackend)
    )
    con = ai_query.connect(engine=counting)
    con.execute("CREATE TABLE t AS SELECT range AS id, 'row ' || range AS p FROM range(3)")
    deep = "ARRAY<" * 200 + "STRING" + ">" * 200
    with pytest.raises(ConfigError) as info:
        con.databricks_sql(
            f"SELECT ai_query('{CHAT}', p, returnType => '{deep}', failOnError => false) FROM t"
        ).fetchall()
    assert str(info.value) == (
        f"bad returnType: its ARRAY, STRUCT and MAP types nest 200 levels deep; at most "
        f"{MAX_TYPE_DEPTH} are supported (results cross Arrow, which carries no deeper types)"
    )
    assert counting.rows == 0
    con.close()
