"""Shared prompt prefixes and duplicate rows: ai_query in DuckDB vs naive vLLM offline, same run.

Batch prompts often share a long prefix (an instruction, then the row's text). Four tables of
``--rows`` rows (max_tokens 8, temperature 0), each in table order:

- ``eight``: 8 different ~1,200-token instructions mixed over the rows (row i has i % 8);
- ``one``: one ~1,200-token instruction before every row's text;
- ``unique``: short distinct prompts (nothing shared: staging must cost nothing);
- ``dups``: short prompts, every one appearing twice (50% duplicate rows).

Each runs as ``SELECT ai_query(...) FROM t`` in DuckDB (``ai_query.connect()``: the private
engine server users get, with ai_query's shared tails: rows in flight share an instruction's
last, partial KV block) and as one ``LLM.chat`` call over the same prompts in each of two
baselines, each plain vLLM offline in a process of its own, in the same run:

- ``default``: ``LLM(model, dtype="bfloat16")`` as a user writes it first (compiled mode,
  vLLM's own KV block size and scheduler limits);
- ``tuned``: every engine argument as ai_query's for this machine (``engine_defaults``).

The sides take turns (their order rotates), and each trial uses fresh row texts (the engine
remembers greedy answers; vLLM's prefix cache would remember rows). Speed-up = baseline seconds
/ ai_query seconds per table, against each baseline and against the faster of the two ("best");
rows whose answer differs from a baseline's are counted (temperature 0). Goals: every table
>= 1.0x default; unique >= 0.97x best; dups >= 1.8x best; eight and one >= 1.5x default and
>= 1.3x best.

    .venv/bin/python bench/shared_prefix.py [--rows 256] [--trials 2] [--tables eight,one,...]
        [--model DIR] [--tcmalloc-baseline]

Every side prints its allocator: ai_query's engine server preloads the machine's tcmalloc,
vLLM offline runs on glibc's malloc as users start it; ``--tcmalloc-baseline`` adds the tuned
baseline with tcmalloc preloaded too (reported beside the others, not part of "best").

A table may be given twice (``--tables unique,one,eight,unique``: is a table slower after
others?); each place gets fresh rows and its own figures.

``PYTHONPATH=bench/emulate_avx2`` runs every side on AVX2 kernels (``emulate_avx2/``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    CHAT_ENDPOINT,
    DEFAULT_BASELINE,
    TOPICS,
    OfflineBaseline,
    add_model_args,
    bench_catalog,
    chat_model_dir,
    cpu_line,
    process_malloc,
    query_rows,
)

from ai_query.engine.process.lifeline import descendants  # noqa: E402
from ai_query.machine import this_machine  # noqa: E402

#: (against vLLM's defaults, against the best baseline) per table.
GOALS = {"eight": (1.5, 1.3), "one": (1.5, 1.3), "unique": (1.0, 0.97), "dups": (1.0, 1.8)}
MAX_TOKENS = 8
#: The optional third baseline (``--tcmalloc-baseline``).
TCMALLOC = "tuned+tcmalloc"


def instruction(k: int) -> str:
    """A ~1,200-token instruction, different for each ``k``."""
    rules = [
        f"Rule {k}.{i}: when the text mentions {TOPICS[(i + k) % len(TOPICS)]}, answer in plain "
        f"words, keep the answer under twelve words, and never repeat the question back."
        for i in range(40)
    ]
    return f"You follow instruction set {k}.\n" + "\n".join(rules)


def table_prompts(table: str, rows: int, trial: int | str) -> list[str]:
    """The prompts of ``table`` for one trial (fresh row texts per trial; a table given twice
    is fresh at each place: ``trial`` then names the place too)."""
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


def label(tables: list[str], k: int) -> str:
    """The name of the ``k``-th table in the run: a table given twice (``unique,one,unique``:
    does a table cost more after another?) is told apart by its place (``unique (place 3)``)."""
    table = tables[k]
    return table if tables.count(table) == 1 else f"{table} (place {k + 1})"


class Ours:
    """A DuckDB connection from ``ai_query.connect()`` (its private engine server)."""

    def __init__(self, catalog: Any, endpoint: str) -> None:
        import ai_query

        self.con = ai_query.connect(catalog=catalog)
        self.endpoint = endpoint
        self.con.sql(f"SELECT ai_query('{endpoint}', 'warm up')").fetchall()
        self.server_pid = next(
            pid for pid in descendants(os.getpid())
            if b"ai_query\0serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )  # fmt: skip

    def run(self, prompts: list[str]) -> tuple[float, list[str]]:
        params = f", modelParameters => named_struct('max_tokens', {MAX_TOKENS})"
        return query_rows(self.con, self.endpoint, prompts, params)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--tables", default="eight,one,unique,dups")
    parser.add_argument("--tcmalloc-baseline", action="store_true",
                        help="a third baseline: tuned, with the machine's tcmalloc preloaded "
                        "(reported beside the others, not part of best)")
    add_model_args(parser)
    args = parser.parse_args()
    tables = args.tables.split(",")
    labels = [label(tables, k) for k in range(len(tables))]
    model = chat_model_dir(args)
    print(cpu_line(), flush=True)
    baselines = {"default": OfflineBaseline(model, DEFAULT_BASELINE),
                 "tuned": OfflineBaseline(model, None)}  # fmt: skip
    if args.tcmalloc_baseline:
        baselines[TCMALLOC] = OfflineBaseline(model, None, preload=this_machine().tcmalloc)
    for name, baseline in baselines.items():
        print(f"baseline {name}: {baseline.settings}", flush=True)
    ours = Ours(bench_catalog(args, embeddings=False), CHAT_ENDPOINT)
    print(f"ai_query's engine server: malloc {process_malloc(ours.server_pid)}", flush=True)
    ratios: dict[str, dict[str, list[float]]] = {name: {} for name in labels}
    sides = [*baselines, "ours"]
    for trial in range(args.trials):
        for k, table in enumerate(tables):
            place = trial if labels[k] == table else f"{trial}.{k}"
            prompts = table_prompts(table, args.rows, place)
            seconds: dict[str, float] = {}
            answers: dict[str, list[str]] = {}
            turn = (trial + k) % len(sides)
            for side in sides[turn:] + sides[:turn]:
                run = ours.run if side == "ours" else (
                    lambda p, b=baselines[side]: b.chat(p, MAX_TOKENS))  # fmt: skip
                seconds[side], answers[side] = run(prompts)
            seconds["best"] = min(seconds["default"], seconds["tuned"])
            for base in (*baselines, "best"):
                ratios[labels[k]].setdefault(base, []).append(seconds[base] / seconds["ours"])
            extra = (
                f" ({TCMALLOC} {seconds[TCMALLOC]:.2f} s: "
                f"{seconds[TCMALLOC] / seconds['ours']:.2f}x)" if TCMALLOC in seconds else ""
            )
            differ = {
                b: sum(x != y for x, y in zip(answers["ours"], answers[b], strict=True))
                for b in ("default", "tuned")
            }
            print(
                f"trial {trial} {labels[k]}: default {seconds['default']:.2f} s, tuned "
                f"{seconds['tuned']:.2f} s, ai_query {seconds['ours']:.2f} s; speed-up vs "
                f"default {seconds['default'] / seconds['ours']:.2f}x, vs best "
                f"{seconds['best'] / seconds['ours']:.2f}x{extra}; answers differing from default "
                f"{differ['default']}, from tuned {differ['tuned']} of {len(prompts)}",
                flush=True,
            )
    for baseline in baselines.values():
        baseline.close()
    summary = "; ".join(
        f"{name} {statistics.median(ratios[name]['default']):.2f}x default (goal >= "
        f"{GOALS[t][0]}), {statistics.median(ratios[name]['best']):.2f}x best (goal >= "
        f"{GOALS[t][1]}), {statistics.median(ratios[name]['tuned']):.2f}x tuned"
        + (f", {statistics.median(ratios[name][TCMALLOC]):.2f}x {TCMALLOC}"
           if TCMALLOC in ratios[name] else "")
        for name, t in dict(zip(labels, tables, strict=True)).items()
    )
    print(f"shared_prefix speed-up of ai_query (median of trials): {summary}")


if __name__ == "__main__":
    main()
