"""Quality and speed of the task functions on a small labelled set (bench/data/).

100 reviews with a sentiment (positive / negative / neutral / mixed) through
``ai_analyze_sentiment``, 60 texts with a topic through ``ai_classify`` (5 labels), 40 texts with
a person, location and organization through ``ai_extract``, and the same 40 through ``ai_mask``
(share of texts with no listed entity left). Runs in DuckDB via ``ai_query.connect()`` (the
private engine server, as users get it). Prints accuracy / exact match per function and rows/s.

The bundled chat model is SmolLM2-135M: its accuracy is what it is. ``--model DIR`` measures a
bigger local chat model (a Hugging Face directory vLLM can load) through the same functions.

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

from common import add_model_args, bench_catalog  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    args = parser.parse_args()

    import pyarrow as pa

    import ai_query

    con = ai_query.connect(catalog=bench_catalog(args))
    sentiment, topics, entities = (
        load_csv("sentiment.csv"),
        load_csv("topics.csv"),
        load_jsonl("entities.jsonl"),
    )
    con.raw.register("sentiment_src", pa.Table.from_pylist(sentiment))
    con.raw.register("topics_src", pa.Table.from_pylist(topics))
    con.raw.register("entities_src", pa.Table.from_pylist(entities))
    for name in ("sentiment", "topics", "entities"):
        con.execute(f"CREATE TABLE {name} AS SELECT row_number() OVER () AS i, * FROM {name}_src")
    con.sql("SELECT ai_gen('warm up'), ai_similarity('a', 'b')").fetchall()  # engines loaded

    results: list[tuple[str, str, float, int, float]] = []
    rows, secs = run(con, "SELECT label, ai_analyze_sentiment(text) FROM sentiment ORDER BY i")
    acc = sum(gold == got for gold, got in rows) / len(rows)
    results.append(("ai_analyze_sentiment", "accuracy", acc, len(rows), secs))

    labels = ", ".join(f"'{t}'" for t in TOPICS)
    rows, secs = run(con, f"SELECT label, ai_classify(text, [{labels}]) FROM topics ORDER BY i")
    acc = sum(gold == got for gold, got in rows) / len(rows)
    results.append(("ai_classify", "accuracy", acc, len(rows), secs))

    fields = ", ".join(f"'{f}'" for f in FIELDS)
    rows, secs = run(
        con, f"SELECT person, location, organization, ai_extract(text, [{fields}]) FROM entities"
    )
    hits = [
        [norm(gold) == norm(row[3][field]) for gold, field in zip(row[:3], FIELDS, strict=True)]
        for row in rows
    ]
    field_acc = sum(map(sum, hits)) / (3 * len(rows))
    results.append(("ai_extract", "field exact match", field_acc, len(rows), secs))
    results.append(("ai_extract", "row exact match", sum(all(h) for h in hits) / len(rows), 0, 0))

    rows, secs = run(
        con, f"SELECT person, location, organization, ai_mask(text, [{fields}]) FROM entities"
    )
    clean = sum(not any(entity in row[3] for entity in row[:3]) for row in rows)
    results.append(("ai_mask", "rows fully masked", clean / len(rows), len(rows), secs))

    model = args.model or "smollm2-135m-instruct (bundled)"
    print(f"model: {model}")
    print(f"{'function':<22} {'metric':<18} {'score':>6} {'rows':>5} {'rows/s':>7}")
    for function, metric, score, n, secs in results:
        speed = f"{n / secs:7.1f}" if n else "       "
        print(f"{function:<22} {metric:<18} {score:6.2f} {n or '':>5} {speed}")
    con.close()


if __name__ == "__main__":
    main()
