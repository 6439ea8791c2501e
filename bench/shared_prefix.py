"""Shared prompt prefixes and duplicate rows: ai_query in DuckDB vs naive vLLM offline, same run.

Batch prompts often share a long prefix (an instruction, then the row's text). Four tables of
``--rows`` rows (max_tokens 8, temperature 0), each in table order:

- ``eight``: 8 different ~1,200-token instructions mixed over the rows (row i has i % 8);
- ``one``: one ~1,200-token instruction before every row's text;
- ``unique``: short distinct prompts (nothing shared: staging must cost nothing);
- ``dups``: short prompts, every one appearing twice (50% duplicate rows).

Each runs as ``SELECT ai_query(...) FROM t`` in DuckDB (``ai_query.connect()``: the private
engine server users get) and as one ``LLM.chat`` call over the same prompts (prefix caching on,
as vLLM defaults). The sides alternate, and each trial uses fresh row texts (the engine
remembers greedy answers; vLLM's prefix cache would remember rows). Speed-up = offline seconds
/ ai_query seconds, per table; goals: eight >= 1.5, one >= 1.2, unique >= 0.95, dups >= 1.8.

The baseline (``--baseline``):

- ``naive`` (default): ``LLM(...)`` as a user writes it, with our dtype and scheduler limits but
  vLLM's own KV-cache block size (128 tokens on a CPU; ai_query uses 32 there, see
  ``default_block_size`` in ``ai_query/engine/vllm/model.py`` and ``bench/prefix_blocks.py``);
- ``same``: every engine argument as ours, block size included (what is left is ai_query's
  own scheduling: dedup, batching, the SQL path).

    .venv/bin/python bench/shared_prefix.py [--rows 256] [--trials 2] [--tables eight,one,...]
        [--baseline naive|same] [--model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    CHAT_ENDPOINT,
    TOPICS,
    add_model_args,
    bench_catalog,
    chat_model_dir,
    offline_chat,
    offline_llm,
    timed,
)

GOALS = {"eight": 1.5, "one": 1.2, "unique": 0.95, "dups": 1.8}
MAX_TOKENS = 8


def instruction(k: int) -> str:
    """A ~1,200-token instruction, different for each ``k``."""
    rules = [
        f"Rule {k}.{i}: when the text mentions {TOPICS[(i + k) % len(TOPICS)]}, answer in plain "
        f"words, keep the answer under twelve words, and never repeat the question back."
        for i in range(40)
    ]
    return f"You follow instruction set {k}.\n" + "\n".join(rules)


def table_prompts(table: str, rows: int, trial: int) -> list[str]:
    """The prompts of ``table`` for one trial (fresh row texts per trial)."""
    def row_text(i: int) -> str:  # fresh per table too: the engine remembers greedy answers
        return f"Text {i} ({table}, trial {trial}): a short note about {TOPICS[i % len(TOPICS)]}."

    if table == "eight":
        return [f"{instruction(i % 8)}\n\n{row_text(i)}" for i in range(rows)]
    if table == "one":
        return [f"{instruction(0)}\n\n{row_text(i)}" for i in range(rows)]
    if table == "unique":
        return [f"Write one sentence about: {row_text(i)}" for i in range(rows)]
    if table == "dups":
        half = [f"Write one sentence about: {row_text(i)}" for i in range(rows // 2)]
        return [half[(i * 7) % len(half)] if i % 2 else half[i // 2] for i in range(rows)]
    raise SystemExit(f"unknown table {table!r}")


class Ours:
    """A DuckDB connection from ``ai_query.connect()`` (its private engine server)."""

    def __init__(self, catalog: Any, endpoint: str) -> None:
        import ai_query

        self.con = ai_query.connect(catalog=catalog)
        self.endpoint = endpoint
        self.con.sql(f"SELECT ai_query('{endpoint}', 'warm up')").fetchall()

    def run(self, prompts: list[str]) -> float:
        import pyarrow as pa

        self.con.raw.register("src", pa.table({"id": range(len(prompts)), "p": prompts}))
        self.con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM src ORDER BY id")
        sql = (
            f"SELECT id, ai_query('{self.endpoint}', p, modelParameters => "
            f"named_struct('max_tokens', {MAX_TOKENS})) AS r FROM t"
        )
        table, seconds = timed(lambda: self.con.sql(sql).to_arrow_table())
        if table.num_rows != len(prompts) or table.column("r").null_count:
            raise SystemExit("the DuckDB query lost rows")
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--tables", default="eight,one,unique,dups")
    parser.add_argument("--baseline", choices=("naive", "same"), default="naive")
    add_model_args(parser)
    args = parser.parse_args()
    tables = args.tables.split(",")

    naive = {"block_size": None} if args.baseline == "naive" else {}
    llm = offline_llm("chat", chat_model_dir(args), **naive)
    print(f"baseline: {args.baseline} (KV block size "
          f"{llm.llm_engine.vllm_config.cache_config.block_size})", flush=True)
    offline_chat(llm, ["warm up"], MAX_TOKENS)
    ours = Ours(bench_catalog(args, embeddings=False), CHAT_ENDPOINT)
    speedups: dict[str, list[float]] = {t: [] for t in tables}
    for trial in range(args.trials):
        for table in tables:
            prompts = table_prompts(table, args.rows, trial)
            _, offline_s = timed(lambda p=prompts: offline_chat(llm, p, MAX_TOKENS))
            ours_s = ours.run(prompts)
            speedups[table].append(offline_s / ours_s)
            print(
                f"trial {trial} {table}: offline LLM.chat {offline_s:.2f} s, "
                f"ai_query DuckDB {ours_s:.2f} s, speed-up {offline_s / ours_s:.2f}x",
                flush=True,
            )
    summary = ", ".join(
        f"{t} {statistics.median(s):.2f}x (goal >= {GOALS[t]})" for t, s in speedups.items()
    )
    print(f"shared_prefix speed-up ai_query/{args.baseline} offline (median): {summary}")


if __name__ == "__main__":
    main()
