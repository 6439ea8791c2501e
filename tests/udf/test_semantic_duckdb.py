"""ai_filter, ai_agg and vector_search in DuckDB on the deterministic engine (fast): where each
may appear, NULLs, repeated inputs asked once, and what the engine was asked (counted)."""

from __future__ import annotations

from typing import Any

import pytest

import ai_query
from tests.udf.counting import CountingEngine


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


class RecordingEngine(CountingEngine):
    """Also keeps every prompt it was asked (what the model saw)."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.prompts: list[str] = []

    def run(self, batch: Any) -> Any:
        from ai_query.engine.core.batch import read_request_batch

        requests, _ = read_request_batch(batch)
        self.prompts += [r for r in requests if r is not None]
        return super().run(batch)


def test_ai_agg_map_reduces_a_group_too_large_for_one_context(fake_engine: Any) -> None:
    recording = RecordingEngine(fake_engine)
    with ai_query.connect(engine=recording) as c:  # type: ignore[arg-type]
        # 3 groups of 200 rows, ~1,200 words each: over the deterministic model's 512.
        c.execute(
            "CREATE TABLE t AS SELECT i % 3 AS g, 'row' || lpad(i::VARCHAR, 4, '0') || "
            "' complains about late shipping' AS r FROM range(600) x(i) "
            "UNION ALL SELECT 1, NULL"
        )
        rows = c.sql(
            "SELECT g, ai_agg(r, 'What do customers complain about?') AS a FROM t "
            "GROUP BY g ORDER BY g"
        ).fetchall()
    assert [g for g, _ in rows] == [0, 1, 2]
    assert all(isinstance(a, str) and a for _, a in rows)
    # Map calls over rows (the second line says so; reduce calls read "partial results").
    mapped = [
        p for p in recording.prompts
        if p.split("\n")[1].startswith("Here are some of the group's rows")
    ]
    seen = [tok for p in mapped for tok in p.split() if tok.startswith("row") and tok[3:].isdigit()]
    assert sorted(seen) == [f"row{i:04d}" for i in range(600)]  # every row once, in map calls
    assert len(mapped) > 3  # the groups did not fit one call
    finals = [p for p in recording.prompts if p.endswith("Answer:")]
    assert len(finals) == 3  # one answer per group
    assert all(len(p.split()) <= 512 for p in recording.prompts)


def test_ai_agg_small_group_is_one_call_and_nulls_are_skipped(counting: CountingEngine) -> None:
    with ai_query.connect(engine=counting) as c:  # type: ignore[arg-type]
        rows = c.sql(
            "SELECT g, ai_agg(v, 'Join the words.'), ai_summarize_agg(v) FROM "
            "(VALUES (1, 'a'), (1, NULL), (2, NULL), (3, 'b'), (3, 'c')) t(g, v) "
            "GROUP BY g ORDER BY g"
        ).fetchall()
        whole = c.sql("SELECT ai_agg(v, 'x') FROM (VALUES (1), (2)) t(v)").fetchall()
    assert rows[1] == (2, None, None)  # only NULLs: NULL, as other aggregates
    assert all(isinstance(v, str) for v in rows[0][1:] + rows[2][1:])
    assert counting.rows == 4 + 1  # one call per group and function, one for the whole table
    assert isinstance(whole[0][0], str)


def test_agg_plan_chunks_keep_every_item_and_end() -> None:
    from ai_query.sql.semantic_agg import AggPlan, estimate_tokens

    plan = AggPlan(chunk_tokens=40)
    items = [f"item {i} " * (1 + i % 9) for i in range(50)] + ["x" * 1000]
    chunks = plan.chunks(items)
    flat = [item for chunk in chunks for item in chunk]
    assert len(flat) == len(items)
    assert [c[:5] for c in flat] == [i[:5] for i in items]
    assert all(sum(estimate_tokens(x) + 1 for x in c) <= 40 for c in chunks)
    assert len(plan.chunks(["y" * 500] * 4)) == 2  # long items are cut: two per chunk
