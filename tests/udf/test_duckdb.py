"""ai_query in DuckDB, every call form, on the deterministic backend (fast).
The same forms run through real vLLM in test_duckdb_real.py."""

from __future__ import annotations

import threading
import time

import duckdb
import pyarrow as pa
import pytest

import ai_query
from ai_query.errors import (
    ConfigError,
    RowError,
    SQLParseError,
    UnknownEndpointError,
    UnsupportedCallError,
)
from ai_query.udf.duckdb import register

CHAT = "smollm2-135m-instruct"


@pytest.fixture
def con(fake_engine):  # type: ignore[no-untyped-def]
    c = ai_query.connect(engine=fake_engine)
    c.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES (1, 'good'), (2, NULL), (3, ''), (4, 'good')) v(id, p)"
    )
    yield c
    c.close()


def _type(con, sql: str) -> str:  # type: ignore[no-untyped-def]
    return str(con.sql(sql).types[0])


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(f"ai_query('{CHAT}', p)", id="positional"),
        pytest.param(
            f"ai_query('{CHAT}', p, modelParameters => {{'max_tokens': 3}})", id="arrow-named"
        ),
        pytest.param(
            f"ai_query('{CHAT}', p, MODELPARAMETERS := {{'max_tokens': 3}})", id="walrus-upper"
        ),
        pytest.param(f"ai_query(endpoint => '{CHAT}', request => p)", id="named-endpoint"),
        pytest.param(
            "ai_query('databricks-meta-llama-3-3-70b-instruct', p, returnType => 'STRING')",
            id="alias",
        ),
    ],
)
def test_text_forms_return_varchar(con, call: str) -> None:  # type: ignore[no-untyped-def]
    rows = con.sql(f"SELECT id, {call} AS r FROM t ORDER BY id").fetchall()
    assert _type(con, f"SELECT {call} FROM t") == "VARCHAR"
    assert rows[1] == (2, None)  # NULL request -> NULL
    assert isinstance(rows[2][1], str)  # empty string is a normal request
    assert rows[0][1] == rows[3][1] and rows[0][1]


def test_struct_return_type(con) -> None:  # type: ignore[no-untyped-def]
    sql = f"SELECT ai_query('{CHAT}', p, returnType => 'STRUCT<label: STRING, score: DOUBLE>') AS s FROM t ORDER BY id"
    assert _type(con, sql) == 'STRUCT("label" VARCHAR, score DOUBLE)'
    rows = [r[0] for r in con.sql(sql).fetchall()]
    assert rows[1] is None and isinstance(rows[0]["score"], float)
    assert con.sql(f"SELECT s.label FROM ({sql}) WHERE s IS NOT NULL LIMIT 1").fetchall()[0][0]


def test_array_return_type_and_response_format(con) -> None:  # type: ignore[no-untyped-def]
    assert (
        _type(con, f"SELECT ai_query('{CHAT}', p, returnType => 'ARRAY<STRING>') FROM t")
        == "VARCHAR[]"
    )
    fmt = "STRUCT<a: INT>"
    assert (
        _type(con, f"SELECT ai_query('{CHAT}', p, responseFormat => '{fmt}') FROM t")
        == "STRUCT(a INTEGER)"
    )
    js = con.sql(
        f"SELECT ai_query('{CHAT}', p, responseFormat => 'json_object') FROM t WHERE id = 1"
    ).fetchall()[0][0]
    assert js.startswith("{")


def test_embeddings_are_float_lists(con) -> None:  # type: ignore[no-untyped-def]
    sql = "SELECT ai_query('all-minilm-l6-v2', p) AS e FROM t ORDER BY id"
    assert _type(con, sql) == "FLOAT[]"
    rows = [r[0] for r in con.sql(sql).fetchall()]
    assert len(rows[0]) == 384 and rows[1] is None
    sim = con.sql(
        "SELECT list_cosine_similarity(ai_query('databricks-gte-large-en', 'good'), "
        "ai_query('databricks-bge-large-en', 'good'))"
    ).fetchall()[0][0]
    assert sim == pytest.approx(1.0, abs=1e-5)


def test_fail_on_error_false_gives_error_struct(con) -> None:  # type: ignore[no-untyped-def]
    con.execute("INSERT INTO t VALUES (5, repeat('word ', 2000))")
    sql = f"SELECT id, ai_query('{CHAT}', p, failOnError => false) AS r FROM t ORDER BY id"
    assert _type(con, f"SELECT ai_query('{CHAT}', p, failOnError => false) FROM t") == (
        "STRUCT(result VARCHAR, errorMessage VARCHAR)"
    )
    rows = dict(con.sql(sql).fetchall())
    assert rows[1]["result"] and rows[1]["errorMessage"] is None
    assert rows[2] is None
    assert rows[5]["result"] is None and "maximum context length" in rows[5]["errorMessage"]
    typed = con.sql(
        f"SELECT ai_query('{CHAT}', p, returnType => 'STRUCT<a: INT>', failOnError => false) FROM t"
    ).types[0]
    assert str(typed) == "STRUCT(result STRUCT(a INTEGER), errorMessage VARCHAR)"


def test_fail_on_error_true_fails_the_query_naming_endpoint(con) -> None:  # type: ignore[no-untyped-def]
    con.execute("INSERT INTO t VALUES (5, repeat('word ', 2000))")
    with pytest.raises(
        duckdb.Error, match=f"endpoint '{CHAT}' failed on row .*maximum context length"
    ):
        con.sql(f"SELECT ai_query('{CHAT}', p) FROM t").fetchall()


def test_a_failed_row_comes_out_as_our_row_error_not_duckdbs_wrapper(con) -> None:  # type: ignore[no-untyped-def]
    con.execute("INSERT INTO t VALUES (5, repeat('word ', 2000))")
    query = f"SELECT id, ai_query('{CHAT}', p) FROM t ORDER BY id"
    with pytest.raises(RowError, match=f"endpoint '{CHAT}' failed on row") as raised:
        con.execute(query).fetchall()
    assert raised.value.endpoint == CHAT and "maximum context length" in raised.value.cause
    assert isinstance(raised.value.__cause__, duckdb.Error)  # DuckDB's words stay chained
    with pytest.raises(RowError), con.errors():  # a lazy relation, fetched inside errors()
        con.sql(query).fetchall()
    with pytest.raises(RowError):
        con.execute(query)  # execute runs the statement: the error comes at once
    with pytest.raises(duckdb.CatalogException):  # DuckDB's own errors stay DuckDB's
        con.execute("SELECT * FROM no_such_table")
    con.execute("DELETE FROM t WHERE id = 5")
    assert len(con.execute(query).fetchall()) == 4  # nothing stale is raised afterwards


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        pytest.param(
            "ai_query('nope', p)",
            UnknownEndpointError,
            "known endpoints: all-minilm",
            id="endpoint",
        ),
        pytest.param(
            f"ai_query('{CHAT}', p, modelParameters => {{'max_tokenz': 1}})",
            ConfigError,
            "max_tokenz",
            id="param",
        ),
        pytest.param(
            f"ai_query('{CHAT}', p, returnType => 'STRUCT<a INT')",
            SQLParseError,
            "bad returnType",
            id="return-type",
        ),
        pytest.param(
            f"ai_query('{CHAT}', p, colour => 'red')", UnsupportedCallError, "colour", id="argument"
        ),
        pytest.param(
            "ai_query('all-minilm-l6-v2', p, returnType => 'STRUCT<a: INT>')",
            ConfigError,
            "embeddings",
            id="embed-type",
        ),
    ],
)
def test_bad_calls_fail_before_rows_run(con, fake_engine, call, error, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        con.sql(f"SELECT {call} FROM t")
    assert fake_engine.model_calls == 0


def test_register_on_a_users_own_connection(fake_engine) -> None:  # type: ignore[no-untyped-def]
    raw = duckdb.connect()
    register(raw, engine=fake_engine)
    got = raw.sql(
        f"SELECT ai_query('{CHAT}', 'hi', modelParameters := {{'max_tokens': 2}}) AS r"
    ).fetchall()[0][0]
    assert got == f"{CHAT} says:"
    # Typed results come back as JSON text on a plain connection; CAST gives the type.
    s = raw.sql(
        f"SELECT CAST(CAST(ai_query('{CHAT}', 'x', returnType => 'STRUCT<a: INT>') AS JSON) AS STRUCT(a INT))"
    ).fetchall()[0][0]
    assert isinstance(s["a"], int)
    with pytest.raises(duckdb.Error, match="unknown endpoint 'nope'"):
        raw.sql("SELECT ai_query('nope', 'x')").fetchall()


def test_large_table_rows_stay_aligned(con, fake_engine) -> None:  # type: ignore[no-untyped-def]
    n = 6000  # three DuckDB chunks
    con.execute(
        f"CREATE TABLE big AS SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'row ' || (i % 500) END AS p FROM range({n}) r(i)"
    )
    rows = con.sql(f"SELECT i, p, ai_query('{CHAT}', p) FROM big ORDER BY i").fetchall()
    assert len(rows) == n
    for i, p, answer in rows:
        assert (answer is None) if p is None else answer == f"{CHAT} says: {p}"
    assert fake_engine.model_calls <= 500  # duplicates in flight together run once


def test_duckdb_threads_are_in_flight_together(fake_engine) -> None:  # type: ignore[no-untyped-def]
    active, peak, lock = [0], [0], threading.Lock()

    class Tracking:
        catalog = fake_engine.catalog

        def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.05)
            try:
                return fake_engine.run(batch)
            finally:
                with lock:
                    active[0] -= 1

        def close(self) -> None:
            pass

    con = ai_query.connect(engine=Tracking())
    con.execute("SET threads = 4")
    con.execute("CREATE TABLE big AS SELECT 'p' || i AS p FROM range(20000) r(i)")
    assert con.sql(f"SELECT count(ai_query('{CHAT}', p)) FROM big").fetchall()[0][0] == 20000
    assert peak[0] > 1


def test_databricks_sql_runs_as_written(con) -> None:  # type: ignore[no-untyped-def]
    sql = (
        f"SELECT id, ai_query('{CHAT}', concat('Summarize: ', p), "
        "modelParameters => named_struct('max_tokens', 5, 'temperature', 0.0)) AS summary FROM t ORDER BY id"
    )
    rows = con.databricks_sql(sql).fetchall()
    assert rows[0][1] == f"{CHAT} says: Summarize: good"


def test_embedding_vectors_stay_arrow_in_row_order_across_endpoints(fake_engine) -> None:
    from ai_query.errors import RowError
    from ai_query.udf.rows import answer_vectors

    texts = [None if i % 5 == 0 else f"text {i}" for i in range(20)]
    endpoints = ["all-minilm-l6-v2" if i % 2 else "databricks-gte-large-en" for i in range(20)]
    out = answer_vectors(fake_engine, endpoints, texts)
    assert out.type == pa.list_(pa.float32()) and len(out) == 20
    for i, text in enumerate(texts):
        alone = answer_vectors(fake_engine, [endpoints[i]], [text])[0].as_py()
        assert out[i].as_py() == alone, f"row {i} moved"
    with pytest.raises(RowError, match="all-minilm-l6-v2"):
        answer_vectors(fake_engine, ["all-minilm-l6-v2"] * 2, ["fine", "word " * 5000])


def test_a_plain_embeddings_call_runs_the_vector_function(fake_engine) -> None:
    con = ai_query.connect(engine=fake_engine)
    sql = "SELECT ai_query('all-minilm-l6-v2', 'hello') AS v"
    assert "__ai_query_vector('all-minilm-l6-v2', 'hello')" in con.rewrite(sql)
    vector = con.sql(sql).fetchall()[0][0]
    from ai_query.engine.core.batch import request_batch
    from ai_query.options import CallOptions

    batch = request_batch(["hello"], CallOptions(endpoint="all-minilm-l6-v2"))
    expected = fake_engine.run(batch).column("result")[0].as_py()
    assert vector == expected, "float32 values cross unchanged"
