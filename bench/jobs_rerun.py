"""Nightly re-run of a job over a growing table: incremental vs full.

A 10k-row review table is scored once by a job (``mode = "incremental"``) through the bundled
chat model: that first run is the *full* run, every row to the model (every request is new). Then
5% new rows arrive and the job runs again: the *incremental* run sends only the new rows to
the model and republishes the whole, up-to-date table. Also timed, for reference: a full
re-run answered from the result cache. Engine start-up is excluded (it is warmed first).

    .venv/bin/python bench/jobs_rerun.py                 # real vLLM (CPU or GPU)
    .venv/bin/python bench/jobs_rerun.py --engine deterministic   # the job machinery alone
    .venv/bin/python bench/jobs_rerun.py --model DIR     # another local chat model

Prints the ratio incremental / full wall time last (goal: <= 0.10).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_model_args, bench_catalog, cpu_line

MOODS = ["great", "bad", "fine", "awful", "lovely", "broken", "perfect", "noisy", "slow", "cheap"]


def _write_reviews(path: Path, start: int, stop: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = list(range(start, stop))
    reviews = [f"Order {i}: the item arrived and it was {MOODS[i % len(MOODS)]}." for i in ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "review": reviews}), path)


def _engine(kind: str, catalog: Any) -> Any:
    from ai_query.engine.local import LocalEngine

    if kind == "deterministic":
        from ai_query.engine.backends.deterministic import DeterministicBackend

        return LocalEngine(catalog, backend_factory=DeterministicBackend, memo_entries=0)
    return LocalEngine(catalog, memo_entries=0)


def _timed(label: str, job: Any, request: Any, engine: Any) -> float:
    from ai_query.jobs.runner import run_job

    calls = engine.model_calls
    started = time.perf_counter()
    record = run_job(job, request, engine=engine)
    wall = time.perf_counter() - started
    print(
        f"{label:<28} {wall:8.2f} s  rows run {record.rows_processed:>6}  "
        f"model calls {engine.model_calls - calls:>6}  cache hits {record.cache_hits:>6}  "
        f"output rows {record.output_rows}"
    )
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--new-fraction", type=float, default=0.05)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1024, help="max_rows_per_batch")
    parser.add_argument("--engine", choices=["vllm", "deterministic"], default="vllm")
    add_model_args(parser)
    args = parser.parse_args()
    print(cpu_line(), flush=True)

    from ai_query.engine.core.batch import request_batch
    from ai_query.jobs.runner import RunRequest
    from ai_query.jobs.spec import job_from_data
    from ai_query.options import CallOptions

    engine = _engine(args.engine, bench_catalog(args, embeddings=False))
    engine.run(request_batch(["warm up"], CallOptions(endpoint="smollm2-135m-instruct")))

    with tempfile.TemporaryDirectory(prefix="aiq-bench-jobs-") as tmp:
        root = Path(tmp)
        data = root / "data" / "reviews.parquet"
        _write_reviews(data, 0, args.rows)
        job = job_from_data(
            {
                "name": "nightly",
                "sql": (
                    "SELECT id, review, ai_query('smollm2-135m-instruct', "
                    "concat('One word for this review: ', review), "
                    f"modelParameters => named_struct('max_tokens', {args.max_tokens}), "
                    "failOnError => false) AS verdict FROM reviews"
                ),
                "inputs": {"reviews": str(data)},
                "key": ["id"],
                "output": str(root / "out" / "verdicts"),
                "mode": "incremental",
                "max_rows_per_batch": args.batch,
            },
            base_dir=root,
        )
        print(
            f"{args.rows} rows, {args.new_fraction:.0%} new, engine {args.engine}, "
            f"max_tokens {args.max_tokens}, batches of {args.batch}"
        )
        full = _timed("full run (every row)", job, RunRequest(), engine)  # all cache misses
        new = max(1, int(args.rows * args.new_fraction))
        _write_reviews(data, 0, args.rows + new)
        incremental = _timed(f"incremental (+{new} rows)", job, RunRequest(), engine)
        _timed("full re-run from cache", job, RunRequest(full=True), engine)
    print(f"incremental / full wall time: {incremental / full:.3f}")


if __name__ == "__main__":
    main()
