"""ai_query in Spark SQL (local[2]) through a real engine server process (vLLM, bundled models).

Every Databricks call form, typed results, NULLs, row errors, unknown endpoints, and the same
rows as DuckDB. Deterministic-engine Spark tests are in test_spark_behaviour.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ai_query.errors import UnknownEndpointError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

CHAT = "smollm2-135m-instruct"
LONG = "word " * 3000  # longer than the model's 2048-token context: a row error

PROMPTS = [
    (1, "Reply with one word: hello"),
    (2, None),
    (3, "What is the capital of France? Answer in one word."),
    (4, "Is the sky blue? Answer yes or no."),
]


@pytest.fixture(scope="module")
def prompts(spark: Any) -> Any:
    rows = [*PROMPTS, (5, LONG)]
    frame = spark.createDataFrame(rows, "id INT, prompt STRING").repartition(2)
    frame.createOrReplaceTempView("prompts")
    return frame


@pytest.fixture
def aq(spark: Any, real_server: Any, prompts: Any) -> Any:
    from ai_query.udf.spark import register

    return register(spark, engine_url=real_server.url)


def _rows(frame: Any) -> list[dict[str, Any]]:
    return [row.asDict(recursive=True) for row in frame.collect()]


def test_two_positional_args_give_text_and_null_for_null(spark, aq) -> None:
    rows = _rows(spark.sql(f"SELECT id, ai_query('{CHAT}', prompt) AS answer "
                           "FROM prompts WHERE id <= 4 ORDER BY id"))
    assert [r["id"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["answer"] is None
    assert all(isinstance(r["answer"], str) and r["answer"].strip() for r in rows if r["id"] != 2)


def test_named_args_with_named_struct_match_the_transpiled_form(spark, aq) -> None:
    query = (f"SELECT id, ai_query(endpoint => '{CHAT}', request => prompt, "
             "modelParameters => named_struct('max_tokens', 4, 'temperature', 0.0)) AS answer "
             "FROM prompts WHERE id <= 4 ORDER BY id")
    raw = _rows(spark.sql(query))  # the struct reaches the UDF as a struct
    rewritten = _rows(aq.sql(query))  # transpiled: modelParameters => to_json(named_struct(...))
    assert raw == rewritten
    assert all(len(r["answer"].split()) <= 4 for r in raw if r["answer"] is not None)


def test_six_positional_args_give_a_typed_struct(aq) -> None:
    ddl = "STRUCT<positive: BOOLEAN, stars: INT>"
    # NULL leaves returnType out: Databricks refuses returnType and responseFormat together.
    frame = aq.sql(f"SELECT id, ai_query('{CHAT}', concat('Rate this: ', prompt), NULL, true, "
                   f"named_struct('max_tokens', 40), '{ddl}') AS rating "
                   "FROM prompts WHERE id <= 4 ORDER BY id")
    assert frame.schema["rating"].dataType.simpleString() == "struct<positive:boolean,stars:int>"
    rows = _rows(frame)
    assert rows[1]["rating"] is None
    for r in (rows[0], rows[2], rows[3]):
        assert isinstance(r["rating"]["positive"], bool) and isinstance(r["rating"]["stars"], int)


def test_embeddings_are_array_float(aq) -> None:
    frame = aq.sql("SELECT id, ai_query('databricks-gte-large-en', prompt) AS v, "
                   "ai_query('all-minilm-l6-v2', prompt) AS w "
                   "FROM prompts WHERE id <= 4 ORDER BY id")
    assert frame.schema["v"].dataType.simpleString() == "array<float>"
    rows = _rows(frame)
    assert rows[1]["v"] is None
    for r in (rows[0], rows[2], rows[3]):
        vec = np.array(r["v"])
        assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-3
        assert r["v"] == r["w"]  # the alias names the same model


def test_fail_on_error_false_keeps_every_other_row(aq) -> None:
    frame = aq.sql(f"SELECT id, ai_query('{CHAT}', prompt, failOnError => false, "
                   "modelParameters => named_struct('max_tokens', 4)) AS a "
                   "FROM prompts ORDER BY id")
    assert frame.schema["a"].dataType.simpleString() == "struct<result:string,errorMessage:string>"
    rows = {r["id"]: r["a"] for r in _rows(frame)}
    assert rows[2] is None
    assert rows[5]["result"] is None and rows[5]["errorMessage"]
    for i in (1, 3, 4):
        assert rows[i]["result"] and rows[i]["errorMessage"] is None


def test_fail_on_error_true_fails_the_query_naming_endpoint_and_cause(aq) -> None:
    with pytest.raises(Exception, match=f"ai_query endpoint '{CHAT}' failed on row") as info:
        aq.sql(f"SELECT ai_query('{CHAT}', prompt, "
               "modelParameters => named_struct('max_tokens', 4)) FROM prompts").collect()
    assert "RowError" in str(info.value)


def test_unknown_endpoint_fails_at_analysis_in_aq_sql_and_in_plain_spark_sql(spark, aq) -> None:
    from pyspark.errors import AnalysisException

    jobs_before = len(spark.sparkContext.statusTracker().getJobIdsForGroup(None))
    with pytest.raises(UnknownEndpointError, match="unknown endpoint 'nope'; known endpoints: "):
        aq.sql("SELECT ai_query('nope', prompt) FROM prompts")
    # Plain spark.sql: Spark's analyzer (ai_query's extension) refuses it with the same text.
    with pytest.raises(AnalysisException, match=r"^unknown endpoint 'nope'; known endpoints: all-"):
        spark.sql("SELECT ai_query('nope', prompt) FROM prompts")
    assert len(spark.sparkContext.statusTracker().getJobIdsForGroup(None)) == jobs_before


def test_same_rows_from_duckdb_and_spark(spark, aq, real_engine) -> None:
    """One Databricks query over one table: DuckDB (embedded engine) and Spark (Flight server)."""
    import ai_query

    query = (f"SELECT id, ai_query('{CHAT}', prompt, "
             "modelParameters => named_struct('max_tokens', 12)) "
             f"AS answer, ai_query('{CHAT}', prompt, returnType => 'STRUCT<positive: BOOLEAN>', "
             "modelParameters => named_struct('max_tokens', 20)) AS s, "
             "ai_query('all-minilm-l6-v2', prompt) AS v FROM prompts WHERE id <= 4 ORDER BY id")
    from_spark = aq.sql(query).toArrow().to_pylist()
    con = ai_query.connect(engine=real_engine)
    try:
        con.raw.register("prompts", spark.table("prompts").toArrow())
        from_duckdb = con.databricks_sql(query).to_arrow_table().to_pylist()
    finally:
        con.close()
    assert [r["id"] for r in from_duckdb] == [r["id"] for r in from_spark] == [1, 2, 3, 4]
    for d, s in zip(from_duckdb, from_spark, strict=True):
        assert d["answer"] == s["answer"] and d["s"] == s["s"]
        if d["v"] is None:
            assert s["v"] is None
        else:
            assert np.allclose(d["v"], s["v"], atol=1e-5)
