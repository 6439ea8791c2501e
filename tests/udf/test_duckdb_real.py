"""ai_query in DuckDB through real vLLM with the bundled models."""

from __future__ import annotations

import pyarrow as pa
import pytest

import ai_query
from ai_query.engine.core.batch import align_results, request_batch
from ai_query.errors import UnknownEndpointError
from ai_query.options import CallOptions, ModelParameters

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def con(real_engine):  # type: ignore[no-untyped-def]
    c = ai_query.connect()
    yield c
    c.close()


def _table(n: int = 300) -> pa.Table:
    prompts: list[str | None] = []
    for i in range(n):
        kind = i % 10
        if kind == 0:
            prompts.append(None)
        elif kind == 1:
            prompts.append("")
        elif kind == 2:
            prompts.append(f"Traduis en anglais : « café numéro {i % 5} » ✓")
        elif kind == 3:
            prompts.append("What is the capital of France?")  # duplicated many times
        else:
            prompts.append(f"Give one word that rhymes with number {i}.")
    prompts[157] = "word " * 3000  # over the 2048-token context
    return pa.table({"id": list(range(n)), "p": prompts})


def test_300_rows_with_nulls_unicode_duplicates_and_a_row_error(con, real_engine) -> None:  # type: ignore[no-untyped-def]
    table = _table()
    con.raw.register("src", table)
    rows = con.sql(
        f"SELECT id, p, ai_query('{CHAT}', p, failOnError => false, "
        "modelParameters => {'max_tokens': 8}) AS r FROM src ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(300))
    by_prompt: dict[str, str] = {}
    for i, p, r in rows:
        if p is None:
            assert r is None
        elif i == 157:
            assert r["result"] is None and "maximum context length" in r["errorMessage"]
        else:
            assert r["errorMessage"] is None and isinstance(r["result"], str), (i, r)
            assert by_prompt.setdefault(p, r["result"]) == r["result"]  # same prompt, same answer
    # Spot-check alignment: rows answered alone (no memo) give the same text as in the table.
    sample = [p for i, p, _ in rows if p is not None and i != 157][::25]
    alone = align_results(
        real_engine.run(
            request_batch(
                sample, CallOptions(endpoint=CHAT, model_parameters=ModelParameters(max_tokens=8))
            )
        ),
        len(sample),
    )
    assert alone.column("result").to_pylist() == [by_prompt[p] for p in sample]


def test_typed_calls_through_the_real_engine(con) -> None:  # type: ignore[no-untyped-def]
    con.execute(
        "CREATE OR REPLACE TABLE reviews AS SELECT * FROM (VALUES (1, 'I love this phone'), "
        "(2, 'Great value for money'), (3, NULL)) v(id, review)"
    )
    structs = con.sql(
        f"SELECT id, ai_query('{CHAT}', 'Classify the sentiment of: ' || review, "
        "returnType => 'STRUCT<label: STRING, score: DOUBLE>', modelParameters => {'max_tokens': 96}) AS s "
        "FROM reviews ORDER BY id"
    ).fetchall()
    assert structs[2][1] is None
    for _, s in structs[:2]:
        assert isinstance(s["label"], str) and isinstance(s["score"], float)
    vectors = con.sql(
        "SELECT ai_query('databricks-gte-large-en', review) AS v FROM reviews ORDER BY id"
    ).fetchall()
    assert len(vectors[0][0]) == 384 and vectors[2][0] is None
    near = con.sql(
        "SELECT list_cosine_similarity(ai_query('all-minilm-l6-v2', 'a great phone'), "
        "ai_query('all-minilm-l6-v2', 'I love this phone')) > "
        "list_cosine_similarity(ai_query('all-minilm-l6-v2', 'a great phone'), "
        "ai_query('all-minilm-l6-v2', 'the weather is rainy'))"
    ).fetchall()[0][0]
    assert near is True


def test_unknown_endpoint_fails_before_rows(con) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownEndpointError, match="unknown endpoint 'databricks-dbrx-instruct'"):
        con.sql("SELECT ai_query('databricks-dbrx-instruct', 'x')")
