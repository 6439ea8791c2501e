"""``ai_classify`` with 500 labels vs 4 labels on the same rows: what scoring many labels costs.

Every label is scored by the chat model's probability of it, read over a trie of the labels'
tokens that shares the prompt's KV blocks (:mod:`ai_query.engine.vllm.scoring`), so 500 labels
must not cost 500 generations. One run, in DuckDB via ``ai_query.connect()``: the held-out
support tickets classified into their 4 labels, then into those 4 and 496 other described
labels, each with label scoring (``scoring => 'row'``, the chat model and the embeddings) and
with guided choice (``scoring => 'generate'``); each run's prompts start with their own
instructions, so no run reads another's prefix cache or answers. Prints rows/s, the time
ratios 500/4 labels, and the CPU flags.

    .venv/bin/python bench/many_labels.py [--model DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import add_model_args, bench_catalog, cpu_line, timed  # noqa: E402

SUPPORT = {
    "billing": "charges, refunds and invoices",
    "shipping": "parcels, couriers and deliveries",
    "technical": "the product or app not working",
    "account": "signing in, passwords and profile settings",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    args = parser.parse_args()
    import pyarrow as pa

    import ai_query

    with open(ROOT / "bench" / "data" / "heldout" / "support.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    con = ai_query.connect(catalog=bench_catalog(args))
    con.raw.register("src", pa.Table.from_pylist(rows))
    con.execute("CREATE TABLE t AS SELECT row_number() OVER () AS i, * FROM src")
    many = {**SUPPORT, **{f"topic {i}": f"questions about subject number {i}" for i in range(496)}}
    con.sql("SELECT ai_classify('warm up', ARRAY['a', 'b'])").fetchall()

    def classify(labels: dict[str, str], scoring: str, run_no: int) -> tuple[float, float]:
        text = json.dumps(labels).replace("'", "''")
        options = f"MAP {{'scoring': '{scoring}', 'instructions': 'Run {run_no}.'}}"
        sql = f"SELECT label, ai_classify(text, '{text}', {options}) FROM t ORDER BY i"
        got, secs = timed(lambda: con.sql(sql).fetchall())
        return secs, sum(gold == answer for gold, answer in got) / len(got)

    print(f"{cpu_line()}; {len(rows)} rows")
    print(f"{'labels':>6} {'scoring':>9} {'rows/s':>7} {'accuracy':>8}")
    times: dict[tuple[int, str], float] = {}
    run_no = 0
    for scoring in ("row", "generate"):
        for labels in (SUPPORT, many):
            run_no += 1
            secs, accuracy = classify(labels, scoring, run_no)
            times[len(labels), scoring] = secs
            print(f"{len(labels):>6} {scoring:>9} {len(rows) / secs:>7.1f} {accuracy:>8.2f}")
    for scoring in ("row", "generate"):
        print(f"time 500/4 labels, {scoring}: {times[500, scoring] / times[4, scoring]:.2f}x")
    print(f"time scored/guided, 500 labels: {times[500, 'row'] / times[500, 'generate']:.2f}x")
    con.close()


main()
