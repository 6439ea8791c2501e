"""Quality and speed of the task functions on labelled sets, with and without label scoring.

Sentiment (``ai_analyze_sentiment``, 4 labels) and topics (``ai_classify``) run twice on the same
rows in one run: ``scoring => auto`` (each label scored by the chat model's probability,
calibrated, with the embeddings model; :mod:`ai_query.udf.label_scores`) and ``scoring =>
generate`` (the label generated under guided choice, as before scoring existed). Each prints
accuracy, the expected calibration error of the confidence (ECE, 10 bins; guided generation
gives no confidence), and, on separate runs whose prompts share no prefix, rows/s and the time
ratio. Three sets each: two in ``bench/data/`` (the tuning sets the scorers' two constants and
prompts were chosen on: sentiment.csv and reviews2.csv; topics.csv and tickets.csv) and one in
``bench/data/heldout/`` (written for evaluation only, never tuned on). Structured output: ``returnType =>
'STRUCT<label: STRING>'`` over the reviews, the share that parsed and the share of clean labels
(words, not JSON debris). ``ai_extract``/``ai_mask`` on 40 texts with entities, as before, and the expected calibration
error of ``ai_extract``'s per-field confidence (``enableConfidenceScores``).
Runs in DuckDB via ``ai_query.connect()`` (the private engine server, as users get it).

The bundled chat model is SmolLM2-135M. ``--model DIR`` measures a bigger local chat model
(a Hugging Face directory vLLM can load) through the same functions.

    .venv/bin/python bench/task_quality.py [--model DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import add_model_args, bench_catalog, cpu_line  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
TOPICS = ["sports", "politics", "technology", "health", "finance"]
FIELDS = ["person", "location", "organization"]


def load_csv(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="") as f:
        return list(csv.DictReader(f))


def load_jsonl(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def run(con: Any, sql: str) -> tuple[list[tuple[Any, ...]], float]:
    start = time.perf_counter()
    rows = con.sql(sql).fetchall()
    return rows, time.perf_counter() - start


def norm(value: Any) -> str:
    return "" if value is None else " ".join(str(value).lower().strip(" .").split())


def ece(pairs: list[tuple[bool, float]], bins: int = 10) -> float:
    """Expected calibration error of (correct, confidence) pairs."""
    total = 0.0
    for b in range(bins):
        group = [(ok, p) for ok, p in pairs if b / bins < p <= (b + 1) / bins]
        if group:
            accuracy = sum(ok for ok, _ in group) / len(group)
            confidence = sum(p for _, p in group) / len(group)
            total += len(group) / len(pairs) * abs(accuracy - confidence)
    return total


#: (name, table, the call with ``{options}``, labels): each run with and without scoring.
LABEL_TASKS = [
    ("sentiment", "sentiment", "ai_analyze_sentiment(text, {options})"),
    ("sentiment 2", "reviews2", "ai_analyze_sentiment(text, {options})"),
    ("sentiment held-out", "h_sentiment", "ai_analyze_sentiment(text, {options})"),
    ("topics (5)", "topics", "ai_classify(text, [{topics}], {options})"),
    ("IT tickets (4)", "tickets", "ai_classify(text, [{tickets}], {options})"),
    ("support held-out (4)", "h_support", "ai_classify(text, [{support}], {options})"),
]
SUPPORT = ["billing", "shipping", "technical", "account"]
TICKETS = ["hardware", "network", "software", "access"]


def label_rows(
    con: Any, table: str, call: str, scoring: str, instructions: str = ""
) -> tuple[list[Any], float]:
    extra = f", 'instructions': '{instructions}'" if instructions else ""
    options = f"MAP {{'enableConfidenceScores': true, 'scoring': '{scoring}'{extra}}}"
    expr = call.format(
        options=options,
        topics=", ".join(f"'{t}'" for t in TOPICS),
        support=", ".join(f"'{t}'" for t in SUPPORT),
        tickets=", ".join(f"'{t}'" for t in TICKETS),
    )
    return run(con, f"SELECT label, {expr} FROM {table} ORDER BY i")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    args = parser.parse_args()
    print(cpu_line(), flush=True)

    import pyarrow as pa

    import ai_query

    con = ai_query.connect(catalog=bench_catalog(args))
    tables = {
        "sentiment": load_csv("sentiment.csv"),
        "topics": load_csv("topics.csv"),
        "entities": load_jsonl("entities.jsonl"),
        "reviews2": load_csv("reviews2.csv"),
        "tickets": load_csv("tickets.csv"),
        "h_sentiment": load_csv("heldout/sentiment.csv"),
        "h_support": load_csv("heldout/support.csv"),
    }
    for name, rows in tables.items():
        con.raw.register(f"{name}_src", pa.Table.from_pylist(rows))
        con.execute(f"CREATE TABLE {name} AS SELECT row_number() OVER () AS i, * FROM {name}_src")
    con.sql("SELECT ai_gen('warm up'), ai_similarity('a', 'b')").fetchall()  # engines loaded
    # Warm both paths (vLLM's grammar compiler, the label trie) outside the timings.
    for scoring in ("auto", "generate"):
        label_rows(con, "sentiment WHERE i <= 2", LABEL_TASKS[0][2], scoring)

    print(f"model: {args.model or 'smollm2-135m-instruct (bundled)'}")
    print(f"{'labels':<22} {'rows':>5} {'acc scored':>10} {'ECE':>5} {'acc guided':>10}")
    for title, table, call in LABEL_TASKS:
        scored, _ = label_rows(con, table, call, "auto")
        guided, _ = label_rows(con, table, call, "generate")
        n = len(scored)
        acc_scored = sum(gold == got["label"] for gold, got in scored) / n
        acc_guided = sum(gold == got["label"] for gold, got in guided) / n
        error = ece([(gold == got["label"], got["confidence"]) for gold, got in scored])
        print(f"{title:<22} {n:>5} {acc_scored:>10.2f} {error:>5.2f} {acc_guided:>10.2f}")

    # Speed, fairly: each run's prompts start with their own instructions, so no run reads the
    # prompt KV blocks (vLLM's prefix cache) or the answers (the engine's memo) of another;
    # the two ways alternate, and each keeps its best of two runs.
    print()
    print(
        f"{'speed (same rows)':<22} {'rows':>5} {'rows/s scored':>13} {'rows/s guided':>13} "
        f"{'time ratio':>10}"
    )
    for title, table, call in (LABEL_TASKS[0], LABEL_TASKS[3]):
        best = {"auto": float("inf"), "generate": float("inf")}
        for run_no in range(4):
            scoring = ("generate", "auto")[run_no % 2]
            rows, secs = label_rows(con, table, call, scoring, f"Batch {run_no + 1}.")
            best[scoring] = min(best[scoring], secs)
        n = len(rows)
        print(
            f"{title:<22} {n:>5} {n / best['auto']:>13.1f} {n / best['generate']:>13.1f} "
            f"{best['auto'] / best['generate']:>9.2f}x"
        )

    results: list[tuple[str, str, float, int, float]] = []
    rows, secs = run(
        con,
        "SELECT ai_query('smollm2-135m-instruct', 'Label this review: ' || text, "
        "returnType => 'STRUCT<label: STRING>', failOnError => false) FROM sentiment ORDER BY i",
    )
    parsed = [r[0]["result"] for r in rows if r[0]["errorMessage"] is None]
    clean = [p for p in parsed if p["label"] and not set('{}[]"') & set(p["label"])]
    results.append(("STRUCT<label>", "share parsed", len(parsed) / len(rows), len(rows), secs))
    results.append(("STRUCT<label>", "clean labels", len(clean) / len(rows), 0, 0))

    fields = ", ".join(f"'{f}'" for f in FIELDS)
    rows, secs = run(
        con,
        f"SELECT person, location, organization, ai_extract(text, [{fields}], "
        "MAP {'enableConfidenceScores': true}) FROM entities",
    )
    hits = [
        [
            (norm(gold) == norm(row[3]["response"][field]), row[3]["confidence"][field])
            for gold, field in zip(row[:3], FIELDS, strict=True)
        ]
        for row in rows
    ]
    field_acc = sum(hit for row in hits for hit, _ in row) / (3 * len(rows))
    results.append(("ai_extract", "field exact match", field_acc, len(rows), secs))
    row_acc = sum(all(hit for hit, _ in row) for row in hits) / len(rows)
    results.append(("ai_extract", "row exact match", row_acc, 0, 0))
    results.append(("ai_extract", "field conf. ECE", ece([p for row in hits for p in row]), 0, 0))

    rows, secs = run(
        con, f"SELECT person, location, organization, ai_mask(text, [{fields}]) FROM entities"
    )
    masked = sum(not any(entity in row[3] for entity in row[:3]) for row in rows)
    results.append(("ai_mask", "rows fully masked", masked / len(rows), len(rows), secs))

    print()
    print(f"{'function':<22} {'metric':<18} {'score':>6} {'rows':>5} {'rows/s':>7}")
    for function, metric, score, n, secs in results:
        speed = f"{n / secs:7.1f}" if n else "       "
        print(f"{function:<22} {metric:<18} {score:6.2f} {n or '':>5} {speed}")
    con.close()


if __name__ == "__main__":
    main()
