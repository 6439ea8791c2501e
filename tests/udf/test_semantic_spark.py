"""ai_filter (and the semantic aggregates) in Spark SQL and as PySpark Columns, on a
deterministic engine server."""

from __future__ import annotations

from typing import Any

import pytest

EMBED = "all-minilm-l6-v2"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]


@pytest.fixture
def aq(spark: Any, det_server: Any) -> Any:
    from ai_query.udf.spark import register

    aq = register(spark, engine_url=det_server.url)
    spark.createDataFrame(
        [(i, None if i % 5 == 0 else f"review {i % 7}", f"group {i % 3}") for i in range(1, 31)],
        "id INT, review STRING, g STRING",
    ).createOrReplaceTempView("reviews")
    return aq


def test_ai_filter_in_spark_sql(aq: Any) -> None:
    judged = aq.sql(
        "SELECT id, ai_filter('Is this review about a refund? ' || review) AS ok, "
        "ai_filter('Does it mention the product?', review) AS m FROM reviews"
    ).collect()
    assert {r.ok for r in judged} <= {True, False, None}
    assert all(r.ok is None and r.m is None for r in judged if r.id % 5 == 0)
    kept = aq.sql(
        "SELECT id FROM reviews WHERE ai_filter('Is this review about a refund? ' || review)"
    ).collect()
    assert sorted(r.id for r in kept) == sorted(r.id for r in judged if r.ok)
    cased = aq.sql(
        "SELECT a.id, CASE WHEN ai_filter('Same?', a.review || ' / ' || b.review) THEN 1 "
        "ELSE 0 END AS same FROM reviews a JOIN reviews b ON "
        "ai_filter('Same?', a.review || ' / ' || b.review) WHERE a.id <= 5 AND b.id <= 5"
    ).collect()
    assert all(r.same == 1 for r in cased)


def test_ai_filter_column(aq: Any) -> None:
    from ai_query.udf.spark import functions as AF

    frame = aq.spark.table("reviews")
    out = frame.select("id", AF.ai_filter("Is it good?", "review").alias("ok")).collect()
    assert frame.select(AF.ai_filter("Is it good?", "review").alias("x")).dtypes == [
        ("x", "boolean")
    ]
    assert all(r.ok is None for r in out if r.id % 5 == 0)
    assert {r.ok for r in out if r.id % 5} <= {True, False}


def test_ai_agg_and_summarize_agg_group_by_in_spark_sql(aq: Any) -> None:
    rows = aq.sql(
        "SELECT g, ai_agg(review, 'What do these reviews say?') AS a, "
        "ai_summarize_agg(review) AS s FROM reviews GROUP BY g ORDER BY g"
    ).collect()
    assert [r.g for r in rows] == ["group 0", "group 1", "group 2"]
    assert all(isinstance(r.a, str) and r.a and isinstance(r.s, str) for r in rows)
    empty = aq.sql("SELECT ai_agg(review, 'x') AS a FROM reviews WHERE review IS NULL").collect()
    assert empty[0].a is None


def test_vector_index_and_search_in_spark(aq: Any, tmp_path: Any) -> None:
    import numpy as np

    import ai_query
    from ai_query.engine.spec import get_engine
    from ai_query.udf.vector_index import _embed

    spark = aq.spark
    spark.createDataFrame(
        [(i, f"note {i} about topic {i % 7}") for i in range(40)] + [(99, None)],
        "id BIGINT, body STRING",
    ).write.mode("overwrite").parquet(str(tmp_path / "notes"))
    spark.read.parquet(str(tmp_path / "notes")).createOrReplaceTempView("notes")
    first = ai_query.create_vector_index(
        spark, "notes_idx", "notes", "id", "body", EMBED, path=str(tmp_path / "idx")
    )
    assert (first.rows, first.embedded) == (41, 40)
    got = aq.sql(
        "SELECT id, search_score FROM vector_search(index => 'notes_idx', "
        "query_text => 'note 5 about topic 5', num_results => 4)"
    ).collect()
    engine = get_engine(aq.spec)
    texts = [f"note {i} about topic {i % 7}" for i in range(40)]
    docs = np.asarray(_embed(engine, EMBED, texts))
    query = np.asarray(_embed(engine, EMBED, ["note 5 about topic 5"])[0])
    scores = docs @ query / (np.linalg.norm(docs, axis=1) * np.linalg.norm(query))
    best = np.argsort(-scores, kind="stable")[:4]
    assert [r.id for r in got] == best.tolist()
    assert [r.search_score for r in got] == pytest.approx(scores[best].tolist(), abs=1e-5)
    # Re-sync: one changed text, one new row, one deleted.
    rows = [(i, "rewritten" if i == 1 else f"note {i} about topic {i % 7}") for i in range(2, 40)]
    spark.createDataFrame(
        [*rows, (1, "rewritten"), (500, "brand new")], "id BIGINT, body STRING"
    ).write.mode("overwrite").parquet(str(tmp_path / "notes2"))
    spark.read.parquet(str(tmp_path / "notes2")).createOrReplaceTempView("notes")
    again = ai_query.create_vector_index(
        spark, "notes_idx", "notes", "id", "body", EMBED, path=str(tmp_path / "idx")
    )
    assert (again.rows, again.embedded) == (40, 2)
    spark.createDataFrame([("rewritten",), ("brand new",)], "question STRING") \
        .createOrReplaceTempView("questions")
    lateral = aq.sql(
        "SELECT q.question, r.id FROM questions q, LATERAL vector_search(index => 'notes_idx', "
        "query_text => q.question, num_results => 1) r"
    ).collect()
    assert sorted((r.question, r.id) for r in lateral) == [("brand new", 500), ("rewritten", 1)]
