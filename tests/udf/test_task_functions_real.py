"""The task functions through real vLLM with the bundled models, in DuckDB and Spark SQL.

The 135M chat model is weak, so these check what guided decoding guarantees (answers in the
label set, STRUCTs with the labels as fields), NULLs and duplicates, and what embeddings make
certain (similarity), never the model's accuracy (bench/task_quality.py measures that).
"""

from __future__ import annotations

from typing import Any

import pytest

from ai_query.sql.task_functions import SENTIMENTS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

ROWS = [
    (1, "The delivery was fast and the product works perfectly. I love it!"),
    (2, None),
    (3, "The delivery was fast and the product works perfectly. I love it!"),
    (4, "Alice Johnson flew from Berlin to Madrid, and her suitcase was lost."),
]
LABELS = ["shipping", "billing", "product quality"]
QUERY = """
SELECT id,
  ai_analyze_sentiment(c) AS sentiment,
  ai_classify(c, ARRAY('shipping', 'billing', 'product quality')) AS topic,
  ai_extract(c, ARRAY('person', 'location')) AS entities,
  ai_fix_grammar(c) AS fixed,
  ai_gen(c) AS generated,
  ai_mask(c, ARRAY('person')) AS masked,
  ai_similarity(c, 'The parcel arrived quickly and the item is excellent.') AS near,
  ai_similarity(c, 'Quarterly tax filings are due in April.') AS far,
  ai_summarize(c, 10) AS summary,
  ai_translate(c, 'es') AS spanish
FROM t ORDER BY id
"""


def _check(rows: list[dict[str, Any]]) -> None:
    assert [r["id"] for r in rows] == [1, 2, 3, 4]
    null_row = rows[1]
    assert all(v is None for k, v in null_row.items() if k != "id")
    for row in (rows[0], rows[2], rows[3]):
        assert row["sentiment"] in SENTIMENTS
        assert row["topic"] in LABELS
        assert set(row["entities"]) == {"person", "location"}
        for key in ("fixed", "generated", "masked", "summary", "spanish"):
            assert isinstance(row[key], str), key
        assert len(row["summary"].split()) <= 10
        assert -1.0 <= row["near"] <= 1.0001
    # Same text, same answer (greedy decoding; duplicates).
    assert {k: v for k, v in rows[0].items() if k != "id"} == {
        k: v for k, v in rows[2].items() if k != "id"
    }
    assert rows[0]["near"] > rows[0]["far"]
    # The text comes back whole, with only entities the model found replaced.
    masked = rows[3]["masked"]
    assert masked == ROWS[3][1] or "[MASKED]" in masked
    assert masked.endswith("suitcase was lost.")


def test_duckdb_every_function(real_engine: Any) -> None:
    import ai_query

    con = ai_query.connect(engine=real_engine)
    con.execute("CREATE TABLE t (id INTEGER, c VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", ROWS)
    rel = con.databricks_sql(QUERY)
    types = dict(zip(rel.columns, map(str, rel.types), strict=True))
    assert types["entities"] == 'STRUCT(person VARCHAR, "location" VARCHAR)'
    assert types["near"] == "FLOAT" and types["sentiment"] == "VARCHAR"
    _check([dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()])
    same = con.sql("SELECT ai_similarity('Apache Spark', 'Apache Spark')").fetchall()[0][0]
    assert same == pytest.approx(1.0, abs=1e-4)


def test_spark_every_function(spark: Any, real_server: Any) -> None:
    from ai_query.udf.spark import register

    aq = register(spark, engine_url=real_server.url)
    spark.createDataFrame(ROWS, "id INT, c STRING").repartition(2).createOrReplaceTempView("t")
    frame = aq.sql(QUERY)
    types = dict(frame.dtypes)
    assert types["entities"] == "struct<person:string,location:string>"
    assert types["near"] == "float" and types["topic"] == "string"
    _check([row.asDict(recursive=True) for row in frame.collect()])


def test_ai_extract_with_databricks_typed_nested_schema_parses_every_row(real_engine: Any) -> None:
    import ai_query

    con = ai_query.connect(engine=real_engine)
    con.execute("CREATE TABLE t (id INTEGER, c VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", ROWS)
    schema = (
        '{"person": "the full name of the person the text is about", '
        '"trip": {"type": "object", "description": "a journey the text tells of", '
        '"properties": {"origin": "city they left", "destination": "city they went to"}}, '
        '"problems": {"type": "array", "items": "string", "description": "what went wrong"}, '
        '"tone": {"type": "enum", "enum": ["happy", "unhappy"]}}'
    )
    rel = con.databricks_sql(
        f"SELECT id, ai_extract(c, '{schema}', map('instructions', 'Travel reviews.')) AS e "
        "FROM t ORDER BY id"
    )
    assert str(rel.types[1]) == (
        'STRUCT(person VARCHAR, trip STRUCT(origin VARCHAR, destination VARCHAR), '
        "problems VARCHAR[], tone VARCHAR)"
    )
    rows = rel.fetchall()  # failOnError: a row that did not parse fails the query
    assert [r[0] for r in rows] == [1, 2, 3, 4] and rows[1][1] is None
    for _, e in (rows[0], rows[2], rows[3]):
        assert e["tone"] in ("happy", "unhappy", None)
        assert e["problems"] is None or all(isinstance(p, str) for p in e["problems"])
