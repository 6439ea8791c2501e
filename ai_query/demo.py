"""``ai-query demo``: the main job on a laptop, end to end in DuckDB.

A deterministic table of product reviews goes through three queries: a one-line summary per
review (Databricks SQL), a sentiment label per review with its confidence
(``ai_analyze_sentiment`` with ``enableConfidenceScores``: every label scored by the chat and
embeddings models, DuckDB SQL), its agreement with the sample's own labels, and embeddings
with a nearest-neighbour search over them (Databricks SQL). Rows
run on the bundled models with vLLM. Tables are kept to one line per row so that they read well
in an 80-column terminal.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.console import Console

from ai_query.display import arrow_table, row_progress
from ai_query.sql.task_functions import SENTIMENTS

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
    ("Shipping was slow, but the {p} itself works fine.", "mixed"),
    ("Fantastic {p}! Setup took five minutes and it works perfectly.", "positive"),
    ("Returned the {p}: it stopped working on the first day.", "negative"),
    ("The {p} looks nice. Battery life could be better.", "mixed"),
    ("Great value, the {p} feels sturdy and well made.", "positive"),
]

# Greedy decoding with vLLM's repetition penalty (shown in the SQL, so a user sees and can change
# it): a small model's greedy summary otherwise tends to repeat a phrase until max_tokens.
SUMMARY_SQL = """
SELECT id, ai_query('databricks-meta-llama-3-3-70b-instruct',
                    concat('Summarize this product review in one short sentence: ', review),
       modelParameters => named_struct('max_tokens', 24, 'temperature', 0.0,
                                       'repetition_penalty', 1.1)) AS summary
FROM reviews ORDER BY id
"""
#: The labels the sentiment step may answer: ai_analyze_sentiment's.
SENTIMENT_LABELS: tuple[str, ...] = SENTIMENTS
# DuckDB SQL: ai_analyze_sentiment scores each label with the chat and embeddings models
# (ai_query.udf.label_scores) and, with enableConfidenceScores, returns STRUCT(label,
# confidence).
SENTIMENT_SQL = """
SELECT id, review, label AS sample_label,
       ai_analyze_sentiment(review, MAP {'enableConfidenceScores': true}) AS sentiment
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
    """Run the demo, printing result tables and a timing/token summary; returns the figures.

    Args:
        console: where tables and progress bars go; tables fit its width (80 columns too).
        rows: how many sample reviews.
        engine: the engine to run on; None means the bundled models on vLLM.

    Returns:
        Per-step seconds and token counts, the sentiment labels the model gave (None for a row
        without a valid label), how many agree with the sample's own labels, how many failed.
    """
    import pyarrow as pa

    from ai_query.query_endpoints import start_early
    from ai_query.udf.duckdb import connect

    started = time.perf_counter()
    con = connect(engine=engine)
    # Every model the demo uses starts now, while the first steps are set up.
    start_early(con.engine, [(SUMMARY_SQL, "databricks"), (SENTIMENT_SQL, "duckdb"),
                             (EMBED_SQL, "databricks")])
    con.raw.register("reviews_src", pa.Table.from_pylist(sample_reviews(rows)))
    con.execute("CREATE TABLE reviews AS SELECT * FROM reviews_src")
    console.print(
        f"[bold]ai_query demo[/bold]: {rows} product reviews in DuckDB, bundled models on vLLM\n"
    )
    figures: dict[str, Any] = {"rows": rows}

    summaries = _run_step(con, console, figures, "summaries", SUMMARY_SQL, "databricks")
    console.print(arrow_table(summaries, title="One-line summary per review (chat)", max_rows=5))

    sentiment = _run_step(con, console, figures, "sentiment", SENTIMENT_SQL, "duckdb")
    figures["sentiment_type"] = str(sentiment.schema.field("sentiment").type)
    verdicts = _sentiment_verdicts(sentiment)
    figures["sentiment_labels"] = [v["model_label"] for v in verdicts]
    figures["sentiment_agree"] = sum(v["model_label"] == v["sample_label"] for v in verdicts)
    figures["sentiment_errors"] = sum(v["error"] is not None for v in verdicts)
    figures["sentiment_agreement"] = figures["sentiment_agree"] / max(rows, 1)
    confidences = [v["confidence"] for v in verdicts if v["confidence"] is not None]
    figures["sentiment_confidence"] = sum(confidences) / max(len(confidences), 1)
    shown = pa.Table.from_pylist(verdicts)
    if not figures["sentiment_errors"]:
        shown = shown.drop_columns(["error"])
    console.print(
        arrow_table(
            shown, title="Sentiment (labels scored, with confidence)", max_rows=8, wrap=False
        )
    )

    _run_step(con, console, figures, "embeddings", EMBED_SQL, "databricks")
    vectors = con.raw.sql("SELECT id, review, embedding FROM review_vectors ORDER BY id")
    console.print(
        arrow_table(
            vectors.to_arrow_table(),
            title="Embeddings (ARRAY<FLOAT>, 384 dims)",
            max_rows=5,
            wrap=False,
        )
    )
    neighbours = con.raw.sql(con.rewrite(NEIGHBOURS_SQL, read="databricks")).to_arrow_table()
    console.print(
        arrow_table(
            neighbours,
            title="Nearest reviews to 'product stopped working, I want my money back'",
            wrap=False,
        )
    )
    figures["total_seconds"] = time.perf_counter() - started
    _summary(console, figures)
    con.close()
    return figures


def _run_step(
    con: Any, console: Console, figures: dict[str, Any], key: str, query: str, read: str
) -> Any:
    """Run one step's query under a progress bar; record its time and tokens in ``figures``."""
    t0 = time.perf_counter()
    before = (con.progress.prompt_tokens, con.progress.completion_tokens)
    statement = con.rewrite(query, read=read)
    with row_progress(console, key, figures["rows"]) as bar:
        con.progress.listeners.append(bar)
        try:
            relation = con.raw.sql(statement)
            table = relation.to_arrow_table() if relation is not None else None
        finally:
            con.progress.listeners.remove(bar)
    figures[key] = {
        "seconds": time.perf_counter() - t0,
        "prompt_tokens": con.progress.prompt_tokens - before[0],
        "completion_tokens": con.progress.completion_tokens - before[1],
    }
    return table


def _sentiment_verdicts(table: Any) -> list[dict[str, Any]]:
    """One row per review: the sample's label, the model's label, and why a row has none."""
    out = []
    for row in table.to_pylist():
        answer = row["sentiment"] or {}
        label, error = answer.get("label"), None
        if label not in SENTIMENT_LABELS:
            error = f"{label!r} is not one of the allowed labels"
        confidence = answer.get("confidence")
        out.append(
            {
                "id": row["id"],
                "review": row["review"],
                "sample_label": row["sample_label"],
                "model_label": label if error is None else None,
                "confidence": None if confidence is None else round(confidence, 2),
                "error": error,
            }
        )
    return out


def _summary(console: Console, figures: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="Timing and tokens", header_style="bold")
    for col in ("step", "seconds", "rows/s", "tokens in", "tokens out", "out tok/s"):
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
    rows, agree, errors = figures["rows"], figures["sentiment_agree"], figures["sentiment_errors"]
    counts = Counter(label for label in figures["sentiment_labels"] if label is not None)
    answered = ", ".join(f"{label} {counts[label]}" for label in SENTIMENT_LABELS)
    failed = (
        f"{errors} of {rows} rows failed and count as disagreeing" if errors else "no row failed"
    )
    console.print(
        f"Sentiment: agrees with the sample's own labels on {agree} of {rows} reviews "
        f"({agree / max(rows, 1):.0%}); {failed}; mean confidence "
        f"{figures['sentiment_confidence']:.0%} (calibrated: close to the share right).\n"
        f"Model's labels: {answered}.\n"
        f"Total {figures['total_seconds']:.1f} s (includes starting the engines).",
        highlight=False,
    )
