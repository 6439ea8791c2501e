"""``ai-query demo``: the main job on a laptop, end to end in DuckDB.

A deterministic table of product reviews goes through three Databricks-style queries: a one-line
summary per review, a structured sentiment classification (``returnType`` STRUCT), and
embeddings with a nearest-neighbour search over them. Rows run on the bundled models with vLLM.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from ai_query.display import arrow_table, row_progress

PRODUCTS = [
    "wireless headphones",
    "espresso machine",
    "running shoes",
    "standing desk",
    "e-reader",
    "air fryer",
    "mechanical keyboard",
    "backpack",
    "smart watch",
    "blender",
]
OPINIONS = [
    ("I love these {p}: the quality is excellent and they arrived a day early.", "positive"),
    ("The {p} broke after two weeks. Very disappointed, I want a refund.", "negative"),
    ("Decent {p} for the price, nothing special but it does the job.", "neutral"),
    ("Best {p} I have ever owned, I recommend it to everyone.", "positive"),
    ("The {p} is too loud and the manual is confusing.", "negative"),
    ("Shipping was slow, but the {p} itself works fine.", "neutral"),
    ("Fantastic {p}! Setup took five minutes and it works perfectly.", "positive"),
    ("Returned the {p}: it stopped working on the first day.", "negative"),
    ("The {p} looks nice. Battery life could be better.", "neutral"),
    ("Great value, the {p} feels sturdy and well made.", "positive"),
]

SUMMARY_SQL = """
SELECT id, ai_query('databricks-meta-llama-3-3-70b-instruct',
                    concat('Summarize this product review in one short sentence: ', review),
       modelParameters => named_struct('max_tokens', 24, 'temperature', 0.0)) AS summary
FROM reviews ORDER BY id
"""
SENTIMENT_SQL = """
SELECT id, ai_query('smollm2-135m-instruct',
       concat('Classify the sentiment of this review as positive, negative or neutral: ',
              review),
                    returnType => 'STRUCT<sentiment: STRING, confidence: DOUBLE>',
                    failOnError => false,
                    modelParameters => named_struct('max_tokens', 64)) AS classification
FROM reviews ORDER BY id
"""
EMBED_SQL = """
CREATE TABLE review_vectors AS
SELECT id, review, ai_query('databricks-gte-large-en', review) AS embedding FROM reviews
"""
NEIGHBOURS_SQL = """
WITH q AS (
  SELECT ai_query('all-minilm-l6-v2', 'product stopped working, I want my money back') AS v)
SELECT id, review, list_cosine_similarity(embedding, q.v) AS similarity
FROM review_vectors, q ORDER BY similarity DESC LIMIT 5
"""


def sample_reviews(rows: int = 100) -> list[dict[str, Any]]:
    """A deterministic table of product reviews (same rows every run)."""
    out = []
    for i in range(rows):
        template, label = OPINIONS[i % len(OPINIONS)]
        product = PRODUCTS[(i // len(OPINIONS) + i) % len(PRODUCTS)]
        out.append(
            {"id": i + 1, "product": product, "review": template.format(p=product), "label": label}
        )
    return out


def run_demo(console: Console, rows: int = 100, engine: Any = None) -> dict[str, Any]:
    """Run the demo, printing result tables and a timing/token summary; returns the figures."""
    import pyarrow as pa

    from ai_query.udf.duckdb import connect

    started = time.perf_counter()
    con = connect(engine=engine)
    con.raw.register("reviews_src", pa.Table.from_pylist(sample_reviews(rows)))
    con.execute("CREATE TABLE reviews AS SELECT * FROM reviews_src")
    console.print(
        f"[bold]ai_query demo[/bold]: {rows} product reviews in DuckDB, bundled models on vLLM\n"
    )
    figures: dict[str, Any] = {"rows": rows}
    steps = [
        ("summaries", SUMMARY_SQL, "One-line summary per review (chat)"),
        ("sentiment", SENTIMENT_SQL, "Structured sentiment (returnType STRUCT)"),
        ("embeddings", EMBED_SQL, "Embeddings (ARRAY<FLOAT>, 384 dims)"),
    ]
    for key, query, title in steps:
        t0 = time.perf_counter()
        before = (con.progress.prompt_tokens, con.progress.completion_tokens)
        statement = con.rewrite(query, read="databricks")
        with row_progress(console, key, rows) as bar:
            con.progress.listeners.append(bar)
            try:
                relation = con.raw.sql(statement)
                table = relation.to_arrow_table() if relation is not None else None
            finally:
                con.progress.listeners.remove(bar)
        seconds = time.perf_counter() - t0
        tokens = (
            con.progress.prompt_tokens - before[0],
            con.progress.completion_tokens - before[1],
        )
        figures[key] = {
            "seconds": seconds,
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
        }
        if table is None:
            table = con.raw.sql(
                "SELECT id, review, embedding FROM review_vectors ORDER BY id"
            ).to_arrow_table()
        console.print(arrow_table(table, title=title, max_rows=5))
        if key == "sentiment":
            figures["sentiment_agreement"] = _agreement(table, rows)
    neighbours = con.raw.sql(con.rewrite(NEIGHBOURS_SQL, read="databricks")).to_arrow_table()
    console.print(
        arrow_table(
            neighbours, title="Nearest reviews to 'product stopped working, I want my money back'"
        )
    )
    figures["total_seconds"] = time.perf_counter() - started
    _summary(console, figures)
    con.close()
    return figures


def _agreement(table: Any, rows: int) -> float:
    labels = {r["id"]: r["label"] for r in sample_reviews(rows)}
    hits = 0
    for row in table.to_pylist():
        result = (row["classification"] or {}).get("result") or {}
        got = result.get("sentiment") or ""
        hits += labels[row["id"]] in got.lower()
    return hits / max(rows, 1)


def _summary(console: Console, figures: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="Timing and tokens", header_style="bold")
    for col in ("step", "seconds", "rows/s", "prompt tokens", "completion tokens", "output tok/s"):
        table.add_column(col, justify="right")
    for key in ("summaries", "sentiment", "embeddings"):
        f = figures[key]
        secs = max(f["seconds"], 1e-9)
        table.add_row(
            key,
            f"{secs:.1f}",
            f"{figures['rows'] / secs:.1f}",
            str(f["prompt_tokens"]),
            str(f["completion_tokens"]),
            f"{f['completion_tokens'] / secs:.0f}",
        )
    console.print(table)
    console.print(
        f"sentiment labels matching the sample's own: {figures['sentiment_agreement']:.0%}; "
        f"total {figures['total_seconds']:.1f} s (includes starting the engines)"
    )
