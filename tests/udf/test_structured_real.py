"""Structured output with the bundled 135M model, as users ask for it: every row parses.

A user's ``python file.py`` script (no ``__main__`` guard) and ``ai-query sql``, each with the
real vLLM engine: ``returnType => 'STRUCT<label: STRING>'`` over six short reviews, and the
``responseFormat`` example of Databricks' ``ai_query`` documentation (research-paper
extraction, a DDL STRUCT with ARRAYs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.processes import read_line, run_script
from tests.test_cli import cli

pytestmark = pytest.mark.slow

REVIEWS = [
    "Great product, works perfectly.",
    "Terrible, it broke after a day.",
    "It is okay, nothing special.",
    "Fast delivery and friendly support.",
    "Awful, it broke.",
    "I love the colour but the size is wrong.",
]
#: Databricks' docs example: a research paper's title, authors, abstract and keywords.
PAPER_FORMAT = (
    "STRUCT<research_paper_extraction: STRUCT<title: STRING, authors: ARRAY<STRING>, "
    "abstract: STRING, keywords: ARRAY<STRING>>>"
)
PAPERS = [
    "Attention Is All You Need. Ashish Vaswani, Noam Shazeer, Niki Parmar. We propose the "
    "Transformer, a network architecture based solely on attention mechanisms.",
    "Deep Residual Learning for Image Recognition. Kaiming He, Xiangyu Zhang. Deeper neural "
    "networks are more difficult to train; we present a residual learning framework.",
]
#: What a value holds when the model wrote JSON into a string instead of closing it.
DEBRIS = set('{}[]"')


def debris(value: object) -> bool:
    """Whether a label holds JSON debris (brackets, quotes, a trailing comma) or is empty."""
    text = str(value or "").strip()
    return not text or bool(DEBRIS & set(text)) or text.endswith(",")


def test_a_script_gets_a_clean_label_on_every_row_and_the_docs_example(tmp_path: Path) -> None:
    proc = run_script(tmp_path, f"""
        import json
        import ai_query
        con = ai_query.connect()
        con.sql("CREATE TABLE reviews(review VARCHAR)")
        con.executemany("INSERT INTO reviews VALUES (?)", [[r] for r in {REVIEWS!r}])
        labels = con.sql(
            "SELECT ai_query('databricks-meta-llama-3-3-70b-instruct', "
            "'Label this review: ' || review, returnType => 'STRUCT<label: STRING>', "
            "failOnError => false) AS a FROM reviews").fetchall()
        con.sql("CREATE TABLE papers(text VARCHAR)")
        con.executemany("INSERT INTO papers VALUES (?)", [[p] for p in {PAPERS!r}])
        papers = con.sql(
            "SELECT ai_query('databricks-meta-llama-3-3-70b-instruct', text, "
            "responseFormat => '{PAPER_FORMAT}', failOnError => false) AS a FROM papers"
        ).fetchall()
        print("answers", json.dumps([[r[0] for r in labels], [r[0] for r in papers]]), flush=True)
    """)
    try:
        labels, papers = json.loads(read_line(proc, "answers "))
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert [row["errorMessage"] for row in labels] == [None] * len(REVIEWS), labels
    clean = [row for row in labels if not debris(row["result"]["label"])]
    assert len(clean) >= 0.9 * len(REVIEWS), labels
    assert [row["errorMessage"] for row in papers] == [None] * len(PAPERS), papers
    for row in papers:
        paper = row["result"]["research_paper_extraction"]
        assert set(paper) == {"title", "authors", "abstract", "keywords"}
        assert isinstance(paper["authors"], list) and isinstance(paper["keywords"], list)


def test_ai_query_sql_parses_the_docs_response_format_example(tmp_path: Path) -> None:
    query = tmp_path / "papers.sql"
    rows = ", ".join("('" + p.replace("'", "''") + "')" for p in PAPERS)
    query.write_text(
        "SELECT ai_query('databricks-meta-llama-3-3-70b-instruct', text,\n"
        f"  responseFormat => '{PAPER_FORMAT}') AS paper\n"
        f"FROM VALUES {rows} AS papers(text)\n"
    )
    out_file = tmp_path / "out.parquet"
    out = cli("sql", "-f", str(query), "--output", str(out_file))
    assert out.returncode == 0, out.stderr[-3000:]  # failOnError (the default): no row failed
    papers = [row["paper"]["research_paper_extraction"] for row in pq.read_table(out_file).to_pylist()]
    assert len(papers) == len(PAPERS)
    assert all(isinstance(p["authors"], list) and p["title"] for p in papers), papers

