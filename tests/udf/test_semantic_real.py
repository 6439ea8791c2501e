"""ai_filter, ai_agg and vector_search through real vLLM with the bundled models in DuckDB.

The 135M chat model is weak: these check what guided decoding and the plumbing guarantee
(booleans, NULLs, call counts, one answer per group, exact search order), not accuracy.
"""

from __future__ import annotations

from typing import Any

import pytest

import ai_query
from tests.udf.counting import CountingEngine

pytestmark = pytest.mark.slow


@pytest.fixture
def counting(real_engine: Any) -> CountingEngine:
    return CountingEngine(real_engine)


def test_ai_filter_where_and_join_on_vllm(counting: CountingEngine) -> None:
    with ai_query.connect(engine=counting) as con:  # type: ignore[arg-type]
        con.execute(
            "CREATE TABLE reviews AS SELECT * FROM (VALUES (1, 'I want my money back, refund "
            "me now.'), (2, NULL), (3, 'Great screen and fast battery.')) t(id, review)"
        )
        judged = con.sql(
            "SELECT id, ai_filter('Is this review asking for a refund? ' || review) FROM reviews "
            "ORDER BY id"
        ).fetchall()
        kept = con.sql(
            "SELECT id FROM reviews WHERE ai_filter('Is this review asking for a refund? ' || "
            "review) ORDER BY id"
        ).fetchall()
        assert judged[1] == (2, None)
        assert {v for _, v in judged if v is not None} <= {True, False}
        assert kept == [(i,) for i, v in judged if v]
        assert counting.rows == 2  # the NULL row made no call, the WHERE reused the answers
        con.execute("CREATE TABLE a AS SELECT 'product ' || (i % 4) AS p FROM range(20) r(i)")
        con.execute("CREATE TABLE b AS SELECT 'review ' || (j % 5) AS r FROM range(20) r(j)")
        before = counting.rows
        con.sql(
            "SELECT count(*) FROM a JOIN b ON "
            "ai_filter('Does the review mention the product?', a.p || ' / ' || b.r)"
        ).fetchall()
        assert counting.rows - before == 20  # 400 rows, 20 distinct pairs


def test_ai_agg_over_groups_larger_than_the_context_on_vllm(counting: CountingEngine) -> None:
    import duckdb

    from ai_query.sql.semantic_agg import AggPlan
    from ai_query.udf.duckdb import register

    con = duckdb.connect()
    # A small chunk budget makes 40 rows per group need map-reduce, on the real model.
    register(con, engine=counting, agg_plan=AggPlan(chunk_tokens=120))  # type: ignore[arg-type]
    con.execute(
        "CREATE TABLE t AS SELECT i % 2 AS g, 'Review ' || i || ': the parcel arrived late.' "
        "AS r FROM range(40) x(i)"
    )
    rows = con.sql(
        "SELECT g, ai_agg(r, 'What is the main complaint?'), ai_summarize_agg(r) FROM t "
        "GROUP BY g ORDER BY g"
    ).fetchall()
    assert [g for g, *_ in rows] == [0, 1]
    assert all(isinstance(v, str) for _, *vs in rows for v in vs)
    assert counting.rows > 4  # more than one call per group and function


def test_vector_search_matches_numpy_and_resync_counts_on_vllm(counting: CountingEngine) -> None:
    import numpy as np

    from ai_query.udf.vector_index import _embed

    topics = ["shipping was late", "the battery died", "refund was refused", "great screen"]
    with ai_query.connect(engine=counting) as con:  # type: ignore[arg-type]
        con.execute(
            "CREATE TABLE notes AS SELECT i AS id, 'Customer ' || i || ': ' || "
            f"({topics!r})[1 + i % 4] AS body FROM range(40) r(i)"
        )
        first = ai_query.create_vector_index(
            con, "notes_idx", "notes", "id", "body", "all-minilm-l6-v2"
        )
        assert first.embedded == 40
        got = con.sql(
            "SELECT id, search_score FROM vector_search(index => 'notes_idx', "
            "query_text => 'my money was not returned', num_results => 5)"
        ).fetchall()
        texts = [b for (b,) in con.sql("SELECT body FROM notes ORDER BY id").fetchall()]
        docs = np.asarray(_embed(counting, "all-minilm-l6-v2", texts))
        query = np.asarray(_embed(counting, "all-minilm-l6-v2", ["my money was not returned"])[0])
        scores = docs @ query / (np.linalg.norm(docs, axis=1) * np.linalg.norm(query))
        best = np.argsort(-scores, kind="stable")[:5]
        assert [i for i, _ in got] == best.tolist()
        assert [s for _, s in got] == pytest.approx(scores[best].tolist(), abs=1e-4)
        con.execute("UPDATE notes SET body = 'changed text' WHERE id = 1")
        con.execute("INSERT INTO notes VALUES (100, 'a new note')")
        before = counting.rows
        again = ai_query.create_vector_index(
            con, "notes_idx", "notes", "id", "body", "all-minilm-l6-v2"
        )
        assert again.embedded == 2 and counting.rows - before == 2
