"""ai_filter, ai_agg and vector_search in DuckDB on the deterministic engine (fast): where each
may appear, NULLs, repeated inputs asked once, and what the engine was asked (counted)."""

from __future__ import annotations

from typing import Any

import pytest

import ai_query
from tests.udf.test_task_functions_duckdb import CountingEngine


@pytest.fixture
def counting(fake_engine: Any) -> CountingEngine:
    return CountingEngine(fake_engine)


@pytest.fixture
def con(counting: CountingEngine) -> Any:
    c = ai_query.connect(engine=counting)  # type: ignore[arg-type]
    c.execute("CREATE TABLE reviews (id INTEGER, review VARCHAR)")
    c.execute(
        "INSERT INTO reviews SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE 'review ' || i END "
        "FROM range(1, 31) r(i)"
    )
    yield c
    c.close()


def test_ai_filter_in_where_keeps_the_accepted_rows_and_skips_nulls(
    con: Any, counting: CountingEngine
) -> None:
    judged = con.sql(
        "SELECT id, ai_filter('Is this review about a refund? ' || review) AS ok FROM reviews"
    ).fetchall()
    kept = con.sql(
        "SELECT id FROM reviews WHERE ai_filter('Is this review about a refund? ' || review) "
        "ORDER BY id"
    ).fetchall()
    assert {ok for _, ok in judged} == {True, False, None}
    assert [(i,) for i, ok in sorted(judged) if ok] == kept
    assert all(ok is None for i, ok in judged if i % 5 == 0)  # NULL review -> NULL
    assert counting.rows == 24  # 24 non-NULL rows, asked once across both queries


def test_ai_filter_with_content_in_select_and_case(con: Any, counting: CountingEngine) -> None:
    rel = con.sql(
        "SELECT id, ai_filter('Does the review mention the product?', review) AS m, "
        "CASE WHEN ai_filter('Does the review mention the product?', review) THEN 'yes' "
        "ELSE 'no' END AS label FROM reviews ORDER BY id"
    )
    assert str(rel.types[1]) == "BOOLEAN"
    rows = rel.fetchall()
    assert all(label == ("yes" if m else "no") for _, m, label in rows)
    assert counting.rows == 24


def test_ai_filter_null_content_is_null_without_a_call(con: Any, counting: CountingEngine) -> None:
    assert con.sql("SELECT ai_filter('Is it good?', NULL::VARCHAR)").fetchall() == [(None,)]
    assert con.sql("SELECT ai_filter(NULL::VARCHAR)").fetchall() == [(None,)]
    assert counting.rows == 0


def test_ai_filter_guided_answers_are_true_false(counting: CountingEngine) -> None:
    with ai_query.connect(engine=counting) as c:  # type: ignore[arg-type]
        c.sql("SELECT ai_filter('Is ' || i || ' even?') FROM range(5) r(i)").fetchall()
    fake = counting.engine
    # The deterministic backend picks among the guided choices: only true/false can come back.
    assert fake.model_calls == 5


@pytest.mark.parametrize(
    ("left", "right", "distinct"),
    [
        pytest.param(20, 20, 400, id="all-distinct"),
        pytest.param(4, 5, 20, id="repeated-pairs"),
    ],
)
def test_ai_filter_join_asks_each_distinct_pair_once(
    counting: CountingEngine, left: int, right: int, distinct: int
) -> None:
    with ai_query.connect(engine=counting) as c:  # type: ignore[arg-type]
        # 20 x 20 rows; with 4 and 5 distinct texts only 20 distinct pairs.
        c.execute(f"CREATE TABLE a AS SELECT i, 'product ' || (i % {left}) AS p FROM range(20) r(i)")
        c.execute(f"CREATE TABLE b AS SELECT j, 'review ' || (j % {right}) AS r FROM range(20) r(j)")
        joined = c.sql(
            "SELECT a.p, b.r FROM a JOIN b ON "
            "ai_filter('Does the review mention the product?', a.p || ' / ' || b.r)"
        ).fetchall()
        asked = counting.rows
        expected = {
            row[0]: row[1]
            for row in c.sql(
                "SELECT p || '|' || r, ai_filter('Does the review mention the product?', "
                "p || ' / ' || r) FROM (SELECT DISTINCT p FROM a), (SELECT DISTINCT r FROM b)"
            ).fetchall()
        }
    assert asked == distinct  # the join asked each distinct pair once
    assert counting.rows == distinct  # and the same pairs again are remembered
    assert len(joined) == sum(
        expected[f"product {i % left}|review {j % right}"] for i in range(20) for j in range(20)
    )


def test_ai_filter_join_counts_model_calls(fake_engine: Any) -> None:
    with ai_query.connect(engine=fake_engine) as c:
        c.execute("CREATE TABLE a AS SELECT i, 'product ' || (i % 4) AS p FROM range(20) r(i)")
        c.execute("CREATE TABLE b AS SELECT j, 'review ' || (j % 5) AS r FROM range(20) r(j)")
        rows = c.sql(
            "SELECT count(*) FROM a JOIN b ON "
            "ai_filter('Does the review mention the product?', a.p || ' / ' || b.r)"
        ).fetchall()
    assert 0 < rows[0][0] < 400
    assert fake_engine.model_calls == 20
