"""Typed PySpark DataFrame functions (``ai_query.udf.spark.functions``) on a deterministic engine
server: each returns a Column of the declared Spark type; names and Columns both work."""

from __future__ import annotations

from typing import Any

import pytest

from ai_query.errors import ConfigError, UnknownEndpointError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

CHAT = "smollm2-135m-instruct"


@pytest.fixture
def frame(spark: Any, det_server: Any) -> Any:
    from ai_query.udf.spark import register

    register(spark, engine_url=det_server.url)
    return spark.createDataFrame(
        [(1, "great phone", "nice phone"), (2, None, "x"), (3, "great phone", "tax form")],
        "id INT, review STRING, other STRING",
    )


def test_typed_columns(frame: Any) -> None:
    from pyspark.sql import functions as F

    from ai_query.udf.spark import functions as AF

    out = frame.select(
        "id",
        AF.ai_query(CHAT, "review", returnType="STRUCT<label: STRING, score: DOUBLE>").alias("s"),
        AF.ai_query("all-minilm-l6-v2", F.col("review")).alias("emb"),
        AF.ai_query(CHAT, "review", returnType="INT").alias("n"),
        AF.ai_query(CHAT, "review", returnType="MAP<STRING, INT>").alias("m"),
        AF.ai_query(CHAT, "review", failOnError=False, modelParameters={"max_tokens": 5}).alias(
            "safe"
        ),
        AF.ai_query(CHAT, "review").alias("text"),
        AF.ai_analyze_sentiment("review").alias("sent"),
        AF.ai_classify("review", ["a", "b"]).alias("cls"),
        AF.ai_classify("review", {"x": "first", "y": "second"}).alias("cls2"),
        AF.ai_extract("review", ["person", "place"]).alias("ext"),
        AF.ai_extract("review", ["person"], {"enableConfidenceScores": True}).alias("ext2"),
        AF.ai_similarity("review", "other").alias("sim"),
        AF.ai_summarize("review", 2).alias("sum"),
        AF.ai_translate("review", "it").alias("tr"),
        AF.ai_mask("review", ["person"]).alias("mask"),
        AF.ai_gen("review").alias("gen"),
        AF.ai_fix_grammar("review").alias("fix"),
    ).orderBy("id")
    types = dict(out.dtypes)
    assert types == {
        "id": "int",
        "s": "struct<label:string,score:double>",
        "emb": "array<float>",
        "n": "int",
        "m": "map<string,int>",
        "safe": "struct<result:string,errorMessage:string>",
        "text": "string",
        "sent": "string",
        "cls": "string",
        "cls2": "string",
        "ext": "struct<person:string,place:string>",
        "ext2": "struct<response:struct<person:string>,confidence:struct<person:double>>",
        "sim": "float",
        "sum": "string",
        "tr": "string",
        "mask": "string",
        "gen": "string",
        "fix": "string",
    }
    rows = [r.asDict(recursive=True) for r in out.collect()]
    assert all(v is None for k, v in rows[1].items() if k != "id")
    first = rows[0]
    assert isinstance(first["s"]["label"], str) and len(first["emb"]) == 384
    assert isinstance(first["n"], int) and first["m"]
    assert first["safe"]["errorMessage"] is None
    assert first["cls"] in ("a", "b") and first["cls2"] in ("x", "y")
    assert set(first["ext"]) == {"person", "place"}
    # The deterministic engine gives no token probabilities: the confidence is NULL.
    assert first["ext2"]["confidence"] == {"person": None} and "person" in first["ext2"]["response"]
    assert -1.0 <= first["sim"] <= 1.0001 and len(first["sum"].split()) <= 2
    # Duplicated reviews get the same answers (``other`` differs, so the similarity may not).
    same = [k for k in first if k not in ("id", "sim")]
    assert {k: rows[0][k] for k in same} == {k: rows[2][k] for k in same}


def test_bad_arguments_fail_when_the_column_is_built(frame: Any) -> None:
    from ai_query.udf.spark import functions as AF

    with pytest.raises(ConfigError, match="unsupported language"):
        AF.ai_translate("review", "xx")
    with pytest.raises(ConfigError, match="2 to 500 labels"):
        AF.ai_classify("review", ["only"])
    with pytest.raises(ConfigError, match="unknown option 'multiLabels'"):
        AF.ai_classify("review", ["a", "b"], {"multiLabels": True})
    with pytest.raises(UnknownEndpointError):
        AF.ai_query("nope", "review")
    with pytest.raises(ConfigError, match="not both"):
        AF.ai_query(CHAT, "review", returnType="STRUCT<a: INT>", responseFormat="json_object")


def test_ai_count_tokens_in_spark_sql_and_as_a_typed_column(frame: Any, spark: Any) -> None:
    """The prompt tokens ai_query would read (the deterministic engine counts words), with no
    model call, as a BIGINT in plain spark.sql and from the DataFrame function."""
    from ai_query.udf.spark import functions as AF

    frame.createOrReplaceTempView("counted")
    rows = spark.sql(f"SELECT id, ai_count_tokens('{CHAT}', review) AS n FROM counted "
                     "ORDER BY id").collect()
    assert [(r.id, r.n) for r in rows] == [(1, 2), (2, None), (3, 2)]
    from ai_query.udf.spark import registered

    databricks = registered(spark).sql(f"SELECT ai_count_tokens('{CHAT}', 'a b c') AS n")
    assert databricks.collect()[0].n == 3  # Databricks SQL through aq.sql too
    out = frame.select("id", AF.ai_count_tokens(CHAT, "other").alias("n")).orderBy("id")
    assert out.schema["n"].dataType.simpleString() == "bigint"
    assert [r.n for r in out.collect()] == [2, 1, 2]
    with pytest.raises(UnknownEndpointError):
        AF.ai_count_tokens("nope", "review")


def test_explain_in_spark_counts_the_rows_the_plan_sends_with_no_model_call(
    frame: Any, spark: Any
) -> None:
    """``aq.sql("EXPLAIN ...")`` / ``aq.explain``: Spark's own plan decides the rows (WHERE
    applies), the counts are exact on a known table, and the engine answers nothing."""
    from ai_query.udf.spark import registered

    aq = registered(spark)
    spark.range(50).selectExpr(
        "id", "CASE WHEN id % 10 = 0 THEN NULL ELSE concat('text ', id % 20, ' words') END AS r"
    ).createOrReplaceTempView("known")
    before = spark.sql(f"SELECT ai_count_tokens('{CHAT}', 'x')").collect()  # warm the UDFs
    assert before
    [row] = aq.sql(f"EXPLAIN SELECT ai_query('{CHAT}', r) FROM known WHERE id < 30").collect()
    # ids 0..29: 0, 10, 20 are NULL; the 27 others are 'text <id % 20> words': 18 distinct
    assert (row.rows, row.null_rows, row.distinct_requests) == (30, 3, 18)
    assert row.prompt_tokens == 18 * 3 and row.counted == "exact"
    typed = aq.explain("SELECT ai_classify(r, ARRAY('a', 'b')) FROM known").collect()
    assert typed[0].endpoint == CHAT and typed[0].rows >= 45  # its 45 texts (and its own)
    # the real functions are back: the query answers
    answers = aq.sql(f"SELECT ai_query('{CHAT}', r) AS a FROM known WHERE id = 1").collect()
    assert answers[0].a.endswith("says: text 1 words")


def test_a_session_budget_holds_a_spark_query_across_its_workers(
    frame: Any, spark: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    """``SET ai_query.max_tokens``: over its estimate a query is refused before Spark runs it;
    under it, the engine server holds the query's rows (from every worker) to the budget."""
    from ai_query.errors import BudgetExceededError
    from ai_query.udf.spark import registered
    from ai_query.udf.usage import Spell, UsageHistory

    history = tmp_path / "history.json"
    monkeypatch.setenv("AI_QUERY_USAGE_HISTORY", str(history))
    UsageHistory(history).add(CHAT, Spell(100, 400, 100, 1.0, 10))  # answers: 10% of max_tokens
    aq = registered(spark)
    query = (f"SELECT id, ai_query('{CHAT}', concat('budget row ', id, ' of it'), "
             "failOnError => false, modelParameters => named_struct('max_tokens', 10)) AS a "
             "FROM range(40) ORDER BY id")
    try:
        aq.sql("SET ai_query.max_tokens = 100")
        # 40 distinct texts x (5 words + 1 expected output token) = 240 > 100
        with pytest.raises(BudgetExceededError, match=r"240 tokens > max_tokens 100"):
            aq.sql(query)
        aq.sql("SET ai_query.max_tokens = 300")
        rows = [r.a for r in aq.sql(query).collect()]
        answered = [a for a in rows if a.errorMessage is None]
        refused = [a for a in rows if a.errorMessage is not None]
        assert answered and refused  # each answered row cost 5 + 7 = 12 tokens
        assert all(a.errorMessage.startswith("budget reached: the query allows max_tokens 300")
                   for a in refused)
        assert 12 * len(answered) <= 300 < 12 * len(answered) + 15
    finally:
        spark.conf.unset("ai_query.max_tokens")
    assert all(r.a.errorMessage is None for r in aq.sql(query).collect())  # no budget: all
