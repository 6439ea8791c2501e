"""vector_search's arguments and its DuckDB rewrite (pure), and the aggregates' Spark rewrite."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ai_query.errors import ConfigError, SQLParseError, UnsupportedCallError
from ai_query.sql import transpile
from ai_query.sql.vector_search import VectorIndexInfo

INDEXES = {
    "notes_idx": VectorIndexInfo(
        name="notes_idx", source_table="notes", primary_key="id", text_column="body",
        endpoint="all-minilm-l6-v2", dims=384,
    )
}


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            "vector_search(index => 'notes_idx', query_text => q.question, num_results => 3)",
            id="named",
        ),
        pytest.param("vector_search('notes_idx', q.question, 3)", id="positional"),
    ],
)
def test_lateral_search_becomes_a_top_k_subquery(call: str) -> None:
    sql = transpile(
        f"SELECT q.question, r.body FROM questions q, LATERAL {call} r",
        read="databricks", write="duckdb", vector_indexes=INDEXES,
    )
    assert "LATERAL (SELECT i.* EXCLUDE (__text_md5, __embedding)" in sql
    assert "array_cosine_similarity(i.__embedding, v.__query) AS search_score" in sql
    assert "ai_query('all-minilm-l6-v2', q.question)" in sql  # the index's endpoint embeds
    assert "AS REAL[384]" in sql and "ORDER BY search_score DESC, i.id LIMIT 3) AS r" in sql


@pytest.mark.parametrize(
    "call",
    [
        "vector_search(index => 'notes_idx', query_text => 'q')",
        "vector_search('notes_idx', 'q')",
    ],
)
def test_num_results_defaults_to_ten_as_in_databricks(call: str) -> None:
    sql = transpile(f"SELECT * FROM {call}", read="databricks", write="duckdb",
                    vector_indexes=INDEXES)
    assert "LIMIT 10" in sql


def test_a_search_without_a_query_names_what_is_missing() -> None:
    with pytest.raises(UnsupportedCallError, match="exactly one of query_text, query_vector"):
        transpile("SELECT * FROM vector_search(index => 'notes_idx')", read="databricks",
                  write="duckdb", vector_indexes=INDEXES)
    with pytest.raises(SQLParseError, match="cannot parse"):  # other mistakes still say so
        transpile("SELECT * FROM vector_search(index => 'notes_idx', query_text => 'q') WHERE",
                  read="databricks", write="duckdb", vector_indexes=INDEXES)


def test_query_vector_is_used_as_given() -> None:
    sql = transpile(
        "SELECT * FROM vector_search(index => 'notes_idx', query_vector => v, num_results => 2)",
        read="duckdb", write="duckdb", vector_indexes=INDEXES,
    )
    assert "CAST(v AS REAL[384])" in sql and "ai_query" not in sql


@pytest.mark.parametrize(
    ("sql", "error", "message"),
    [
        pytest.param(
            "SELECT * FROM vector_search(index => 'x', query_text => 'q', num_results => 1)",
            ConfigError, "no vector index 'x'", id="unknown-index",
        ),
        pytest.param(
            "SELECT * FROM vector_search(index => 'notes_idx', query_text => 'q', "
            "num_results => 'three')",
            UnsupportedCallError, "num_results", id="bad-k",
        ),
        pytest.param(
            "SELECT * FROM vector_search(index => 'notes_idx', query_text => 'q', "
            "query_vector => v, num_results => 1)",
            UnsupportedCallError, "exactly one", id="two-queries",
        ),
    ],
)
def test_bad_searches(sql: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        transpile(sql, read="databricks", write="duckdb", vector_indexes=INDEXES)


def test_spark_target_lists_the_columns_and_computes_the_cosine() -> None:
    indexes = {"notes_idx": replace(INDEXES["notes_idx"], columns=("id", "body"))}
    sql = transpile(
        "SELECT q.question, r.body FROM questions q, LATERAL vector_search(index => 'notes_idx', "
        "query_text => q.question, num_results => 3) r",
        read="databricks", write="spark", vector_indexes=indexes,
    )
    assert "LATERAL (SELECT i.id, i.body, AGGREGATE(zip_with(i.__embedding, v.__query" in sql
    assert "/ (i.__norm * v.__norm) AS search_score" in sql
    assert "ORDER BY search_score DESC, i.id LIMIT 3) AS r" in sql
    with pytest.raises(UnsupportedCallError, match="lists no columns"):
        transpile(
            "SELECT * FROM vector_search(index => 'notes_idx', query_text => 'q', num_results => 1)",
            read="databricks", write="spark", vector_indexes=INDEXES,
        )


def test_databricks_target_keeps_the_call() -> None:
    sql = "SELECT * FROM vector_search(index => 'notes_idx', query_text => 'q', num_results => 1)"
    assert "VECTOR_SEARCH(index => 'notes_idx'" in transpile(
        sql, read="databricks", write="databricks"
    )


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT ai_agg(c) FROM t", id="ai_agg-one"),
        pytest.param("SELECT ai_agg(c, 'i', 'j') FROM t", id="ai_agg-three"),
        pytest.param("SELECT ai_summarize_agg(c, 'i') FROM t", id="summarize-two"),
    ],
)
def test_aggregate_argument_counts_are_checked(sql: str) -> None:
    with pytest.raises(SQLParseError, match=r"argument|missing"):
        transpile(sql, read="duckdb", write="spark")
