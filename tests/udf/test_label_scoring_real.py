"""Label scoring through real vLLM with the bundled models, as users call it.

A ``python file.py`` script (no ``__main__`` guard) classifies into 100 labels with
descriptions, multilabel and confidence, and reads sentiment confidence; Spark ``local[2]``
reads confidence from Spark SQL (``aq.sql`` with Databricks' ``map(...)`` options) and from the
typed PySpark functions; ``ai-query sql`` reads Databricks' ``map(...)`` options; the vLLM
backend's scores are whole-label probabilities. What the scoring is worth is measured by
bench/task_quality.py, not asserted here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.processes import read_line, run_script

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

TICKETS = [
    "I was charged twice for my order this month.",
    "My parcel has not arrived and the tracking number does not work.",
    None,
]
#: 100 labels with descriptions: four real topics among 96 others.
LABELS = {
    "billing": "charges, refunds and invoices",
    "shipping": "parcels, couriers and deliveries",
    "login": "passwords and signing in",
    "returns": "sending a product back",
    **{f"topic {i}": f"questions about subject number {i}" for i in range(96)},
}


def test_a_script_classifies_into_100_described_labels_with_confidence(tmp_path: Path) -> None:
    labels = json.dumps(LABELS).replace("'", "''")
    one_sql = (
        f"SELECT ai_classify(t, '{labels}', MAP {{'enableConfidenceScores': true}}) "
        "FROM tickets ORDER BY id"
    )
    many_sql = (
        f"SELECT ai_classify(t, '{labels}', "
        """'{"multilabel": true, "enableConfidenceScores": true}') FROM tickets ORDER BY id"""
    )
    feeling_sql = (
        "SELECT ai_analyze_sentiment(t, MAP {'enableConfidenceScores': true}) "
        "FROM tickets ORDER BY id"
    )
    extract_sql = (
        "SELECT ai_extract(t, ['order', 'problem'], MAP {'enableConfidenceScores': true}) "
        "FROM tickets ORDER BY id"
    )
    proc = run_script(
        tmp_path,
        f"""
        import json
        import ai_query
        con = ai_query.connect()
        con.sql("CREATE TABLE tickets(id INTEGER, t VARCHAR)")
        con.executemany("INSERT INTO tickets VALUES (?, ?)",
                        [[i, t] for i, t in enumerate({TICKETS!r})])
        answers = [[r[0] for r in con.sql(q).fetchall()]
                   for q in ({one_sql!r}, {many_sql!r}, {feeling_sql!r}, {extract_sql!r})]
        print("answers", json.dumps(answers), flush=True)
    """,
    )
    try:
        one, many, feeling, extracted = json.loads(read_line(proc, "answers "))
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert one[2] is None and many[2] is None and feeling[2] is None
    for answer in one[:2]:
        assert answer["label"] in LABELS and 0.01 <= answer["confidence"] <= 1.0
    for answers, best in zip(many[:2], one[:2], strict=True):
        assert answers[0] == best  # the best label first, with the same confidence
        assert all(a["label"] in LABELS and a["confidence"] >= 0.5 * best["confidence"]
                   for a in answers)  # fmt: skip
    for answer in feeling[:2]:
        assert answer["label"] in ("positive", "negative", "neutral", "mixed")
        assert 0.25 <= answer["confidence"] <= 1.0
    assert extracted[2] is None
    for answer in extracted[:2]:  # each field with the model's probability of its value
        assert set(answer["response"]) == set(answer["confidence"]) == {"order", "problem"}
        assert all(0.0 < p <= 1.0 for p in answer["confidence"].values())


def test_spark_sql_and_the_typed_functions_read_confidence(spark: Any, real_server: Any) -> None:
    from ai_query.udf.spark import functions as AF
    from ai_query.udf.spark import register

    aq = register(spark, engine_url=real_server.url)
    rows = [(i, t) for i, t in enumerate(TICKETS)]
    frame = spark.createDataFrame(rows, "id INT, t STRING").repartition(2)
    frame.createOrReplaceTempView("tickets")
    sql = aq.sql(
        "SELECT id, ai_classify(t, ARRAY('billing', 'shipping', 'login'), "
        "map('enableConfidenceScores', 'true')) AS c FROM tickets ORDER BY id"
    )
    assert dict(sql.dtypes)["c"] == "struct<label:string,confidence:double>"
    typed = frame.select(
        "id",
        AF.ai_classify(
            "t", ["billing", "shipping", "login"], {"enableConfidenceScores": True}
        ).alias("c"),
    ).orderBy("id")
    assert dict(typed.dtypes)["c"] == "struct<label:string,confidence:double>"
    extracted = aq.sql(
        "SELECT id, ai_extract(t, ARRAY('order'), map('enableConfidenceScores', 'true')) AS e "
        "FROM tickets ORDER BY id"
    )
    typed_extract = frame.select(
        "id", AF.ai_extract("t", ["order"], {"enableConfidenceScores": True}).alias("e")
    ).orderBy("id")
    for result in (extracted, typed_extract):
        assert dict(result.dtypes)["e"] == (
            "struct<response:struct<order:string>,confidence:struct<order:double>>"
        )
        found = [r["e"] for r in result.collect()]
        assert found[2] is None and all(0.0 < e["confidence"]["order"] <= 1.0 for e in found[:2])
    for result in (sql.collect(), typed.collect()):
        assert result[2]["c"] is None
        for row in result[:2]:
            assert row["c"]["label"] in ("billing", "shipping", "login")
            assert 1 / 3 <= row["c"]["confidence"] <= 1.0
    # The same rows give the same answers through either entry point.
    assert [r["c"] for r in sql.collect()] == [r["c"] for r in typed.collect()]


def test_vllm_scores_are_whole_label_probabilities(real_engine: Any) -> None:
    from ai_query.engine.core.batch import align_results, request_batch
    from ai_query.options import CallOptions, ModelParameters
    from ai_query.sql.task_functions import choice_format

    prompts = ["Is the sky blue? Answer yes or no.", "Name a colour: red, green or blue."]
    choices = ["yes", "no", "red", "green", "blue", "blue sky"]  # "blue" starts "blue sky"

    def run(fmt: str) -> list[Any]:
        options = CallOptions(
            endpoint="smollm2-135m-instruct",
            model_parameters=ModelParameters(max_tokens=8),
            response_format=fmt,
        )
        out = align_results(real_engine.run(request_batch(prompts, options)), len(prompts))
        assert out.column("error").to_pylist() == [None, None]
        return out.column("result").to_pylist()

    scored = [json.loads(a) for a in run(choice_format(choices, scores=True))]
    for answer in scored:
        assert len(answer["logprobs"]) == len(choices)
        assert all(math.isfinite(lp) and lp <= 0 for lp in answer["logprobs"])
        best = max(range(len(choices)), key=answer["logprobs"].__getitem__)
        assert answer["label"] == choices[best]
        # Probabilities of whole answers: a label and its longer extension share no mass.
        assert sum(math.exp(lp) for lp in answer["logprobs"]) <= 1.0 + 1e-6
    # A label's score is its own: asking for other labels beside it, in another order, does
    # not change it (whole-label probabilities, unlike greedy guided decoding, which follows
    # the likeliest first token: "n" can beat "yes" while "yes" beats "no").
    pair = [json.loads(a)["logprobs"] for a in run(choice_format(["yes", "no"], scores=True))]
    more = [
        json.loads(a)["logprobs"] for a in run(choice_format(["no", "maybe", "yes"], scores=True))
    ]
    for (yes, no), (no2, _, yes2) in zip(pair, more, strict=True):
        assert yes == pytest.approx(yes2, abs=0.05) and no == pytest.approx(no2, abs=0.05)


def test_ai_query_sql_reads_databricks_options_and_confidence(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from tests.test_cli import cli

    query = tmp_path / "tickets.sql"
    query.write_text(
        "SELECT t,\n"
        "  ai_classify(t, ARRAY('billing', 'shipping', 'login'),\n"
        "              map('enableConfidenceScores', 'true', 'multilabel', 'true')) AS topics,\n"
        "  ai_analyze_sentiment(t) AS sentiment,\n"
        "  ai_extract(t, ARRAY('item'), map('enableConfidenceScores', 'true')) AS item\n"
        "FROM VALUES ('I was charged twice.'), ('Where is my parcel?') AS tickets(t)\n"
    )
    out_file = tmp_path / "out.parquet"
    out = cli("sql", "-f", str(query), "--output", str(out_file))
    assert out.returncode == 0, out.stderr[-3000:]
    table = pq.read_table(out_file)
    assert str(table.schema.field("topics").type) == (
        "list<element: struct<label: string, confidence: double>>"
    )
    assert str(table.schema.field("item").type) == (
        "struct<response: struct<item: string>, confidence: struct<item: double>>"
    )
    for row in table.to_pylist():
        assert 0 < row["item"]["confidence"]["item"] <= 1
        assert row["sentiment"] in ("positive", "negative", "neutral", "mixed")
        assert row["topics"] and all(
            t["label"] in ("billing", "shipping", "login") and 0 < t["confidence"] <= 1
            for t in row["topics"]
        )
