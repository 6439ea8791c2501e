"""How close EXPLAIN's estimates come to what the query then spends, and how fast EXPLAIN is.

Runs in DuckDB through ``ai_query.connect()`` on the bundled chat model (or ``--model DIR``),
with a usage history of its own (a temporary ``AI_QUERY_USAGE_HISTORY``). First a few queries
teach the history this machine's speed (their spells: prompt tokens, output tokens, seconds).
Then, on four tables, EXPLAIN gives its estimate and the query runs; printed side by side:
prompt tokens, output tokens and wall seconds, estimated and actual (the tokens the model read
and generated, as the budget counts them: one per distinct request, none for cached rows).

- unique: 96 distinct prompts;
- duplicates: 96 rows, 24 distinct prompts;
- shared instruction: 64 rows behind one long instruction;
- cached re-run: the unique table again (every answer in the engine's memo).

Then EXPLAIN over a 100k-row table (prompt tokens from a 20k sample, with its 95% bound)
against the exact count, and the time of EXPLAIN over a 1M-row table.

    .venv/bin/python bench/explain_accuracy.py [--model DIR]

Goals: prompt tokens within 2% (exact when counted in full), wall time within 30%, EXPLAIN
of 1M rows under 10 s. The last line is the 1M-row EXPLAIN time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import CHAT_ENDPOINT, TOPICS, add_model_args, bench_catalog, cpu_line

MAX_TOKENS = 32
INSTRUCTION = (
    "You are a careful assistant for a product team. Read the customer's note below and write "
    "one short, friendly sentence that answers it. Do not repeat the note, do not add a "
    "greeting or a signature, and do not make promises about refunds, delivery dates or "
    "prices. If the note is unclear, ask one short question instead. Keep the tone warm, plain "
    "and professional, and use simple words a busy reader understands at a glance. "
)


def _query(table: str, prompt: str, max_tokens: int = MAX_TOKENS) -> str:
    return (f"SELECT ai_query('{CHAT_ENDPOINT}', {prompt}, modelParameters => "
            f"named_struct('max_tokens', {max_tokens})) AS a FROM {table}")


def _teach(con: Any) -> None:
    """Queries of different shapes, so the history can tell prompt cost from output cost."""
    shapes = ((48, 8, 32), (32, 120, 4), (64, 4, 16), (24, 60, 24), (16, 6, 48), (96, 30, 8),
              (40, 150, 32), (80, 10, 24))
    for n, words, max_tokens in shapes:
        con.sql(f"CREATE OR REPLACE TABLE teach AS SELECT 'Teach {n} ' || i || ': ' || "
                f"repeat('note ', {words}) AS p FROM range({n}) x(i)")
        con.sql(_query("teach", "p", max_tokens)).fetchall()


def _measure(con: Any, name: str, table: str, prompt: str) -> dict[str, Any]:
    query = _query(table, prompt)
    [plan] = con.sql("EXPLAIN " + query).to_arrow_table().to_pylist()
    con.sql("SET VARIABLE ai_query_max_tokens = 1000000000000")  # counts what the model does
    start = time.perf_counter()
    con.sql(query).fetchall()
    seconds = time.perf_counter() - start
    con.sql("RESET VARIABLE ai_query_max_tokens")
    spent = con.spent
    return {
        "table": name, "rows": plan["rows"], "to_send": plan["to_send"],
        "prompt": (plan["prompt_tokens"], spent.prompt_tokens),
        "output": (plan["expected_output_tokens"] or 0, spent.completion_tokens),
        "seconds": (plan["estimated_seconds"] or 0.0, seconds),
    }


def _error(estimate: float, actual: float) -> str:
    if actual == 0:
        return "exact" if estimate == 0 else "-"
    return f"{100 * (estimate - actual) / actual:+.1f}%"


def _print(results: list[dict[str, Any]]) -> None:
    head = (f"{'table':<20} {'rows':>5} {'send':>5} | {'prompt est':>10} {'actual':>7} {'err':>7}"
            f" | {'output est':>10} {'actual':>7} {'err':>7} | {'sec est':>7} {'actual':>7} "
            f"{'err':>7}")
    print(head)
    print("-" * len(head))
    for r in results:
        (pe, pa_), (oe, oa), (se, sa) = r["prompt"], r["output"], r["seconds"]
        print(f"{r['table']:<20} {r['rows']:>5} {r['to_send']:>5} | {pe:>10,} {pa_:>7,} "
              f"{_error(pe, pa_):>7} | {oe:>10,} {oa:>7,} {_error(oe, oa):>7} | {se:>7.2f} "
              f"{sa:>7.2f} {_error(se, sa):>7}")


def _large(con: Any) -> tuple[str, float]:
    """EXPLAIN of 100k rows against the exact count, and the time of EXPLAIN of 1M rows."""
    from ai_query.engine.core.batch import request_batch
    from ai_query.engine.core.preview import preview
    from ai_query.options import CallOptions

    words = " || ".join(f"' {t}'" for t in TOPICS[:6])
    make = ("CREATE OR REPLACE TABLE big AS SELECT 'Row ' || i || ': ' || "
            f"repeat('word ', (i % 37)::INT) || {words} AS p FROM range({{n}}) x(i)")
    con.sql(make.format(n=100_000))
    [plan] = con.sql("EXPLAIN " + _query("big", "p")).to_arrow_table().to_pylist()
    texts = [row[0] for row in con.sql("SELECT p FROM big").fetchall()]
    options = CallOptions.from_json(json.dumps(
        {"endpoint": CHAT_ENDPOINT, "modelParameters": {"max_tokens": MAX_TOKENS}}))
    exact = sum(preview(con.engine, request_batch(texts, options)).column("prompt_tokens")
                .to_pylist())
    line = (f"100k rows: EXPLAIN {plan['prompt_tokens']:,} +/- {plan['prompt_tokens_error']:,} "
            f"prompt tokens ({plan['counted']}), exact {exact:,}: "
            f"{_error(plan['prompt_tokens'], exact)}, within the bound: "
            f"{abs(plan['prompt_tokens'] - exact) <= plan['prompt_tokens_error']}")
    con.sql(make.format(n=1_000_000))
    start = time.perf_counter()
    con.sql("EXPLAIN " + _query("big", "p")).fetchall()
    return line, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="explain-bench-"))
    os.environ["AI_QUERY_USAGE_HISTORY"] = str(work / "history.json")
    import ai_query

    con = ai_query.connect(catalog=bench_catalog(args, embeddings=False))
    print(cpu_line())
    con.sql(f"SELECT ai_query('{CHAT_ENDPOINT}', 'warm up')").fetchall()  # the engine starts
    _teach(con)
    topics = "[" + ", ".join(f"'{t}'" for t in TOPICS) + "]"
    con.sql("CREATE TABLE uniq AS SELECT 'Write one sentence about ' || "
            f"{topics}[1 + i % {len(TOPICS)}] || ' (take ' || i || ').' AS p FROM range(96) x(i)")
    con.sql("CREATE TABLE dups AS SELECT 'Tell me a fact about ' || "
            f"{topics}[1 + i % 24 % {len(TOPICS)}] || ' number ' || (i % 24) || '.' AS p "
            "FROM range(96) x(i)")
    con.sql("CREATE TABLE shared AS SELECT 'Note ' || i || ': where is my parcel number ' || "
            "(i * 7) || '?' AS p FROM range(64) x(i)")
    instruction = INSTRUCTION.replace("'", "''")
    results = [
        _measure(con, "unique", "uniq", "p"),
        _measure(con, "duplicates", "dups", "p"),
        _measure(con, "shared instruction", "shared", f"'{instruction}' || p"),
        _measure(con, "cached re-run", "uniq", "p"),
    ]
    _print(results)
    line, seconds = _large(con)
    print(line)
    print(f"EXPLAIN of 1M rows: {seconds:.2f} s (goal < 10 s)")


main()
