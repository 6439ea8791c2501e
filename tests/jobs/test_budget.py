"""A job's budget: a run that reaches it stops with its committed batches kept; raised, the
next run resumes where it stopped and nothing is answered twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ai_query.errors import BudgetExceededError
from ai_query.jobs.runlog import RunLog
from ai_query.jobs.runner import RunRequest, run_job
from ai_query.jobs.staging import Staging
from tests.jobs.helpers import read_rows, reviews, write_reviews

#: "Sentiment of: review <n>: the product was <mood>" is 8 words; the deterministic answer
#: repeats it after "<model> says:", 10 words: 18 tokens a request.
PER_REQUEST = 18
SQL = (
    "SELECT id, ai_query('smollm2-135m-instruct', concat('Sentiment of: ', review), "
    "failOnError => false, modelParameters => named_struct('max_tokens', 20)) AS sentiment "
    "FROM reviews"
)


def test_a_run_stopped_by_its_budget_resumes_once_raised_answering_nothing_twice(
    tmp_path: Path, make_job: Any, det_engine: Any
) -> None:
    write_reviews(tmp_path / "data" / "reviews.parquet", reviews(64))  # 40 distinct texts
    reference = make_job(output="ref/scored", sql=SQL)
    run_job(reference, engine=det_engine)
    calls = det_engine.model_calls
    assert calls == 40

    job = make_job(sql=SQL, max_tokens=300)  # the first batch (16 texts, 288 tokens) fits
    with pytest.raises(BudgetExceededError, match=r"stopped at its budget \(max_tokens 300; "
                       r"used 288 tokens.*1 committed batch\(es\) are kept"):
        run_job(job, engine=det_engine)
    assert det_engine.model_calls - calls == 16
    assert not (tmp_path / "out" / "scored").exists()  # nothing published yet
    staged = Staging(Path(str(job.state_dir)) / "staging")
    staged.open(job.fingerprint(), "full")
    assert len(staged.batches()) == 1

    record = run_job(job, RunRequest(max_tokens=10_000), engine=det_engine)
    assert det_engine.model_calls - calls == 40  # each distinct request answered once
    assert record.rows_skipped == 16 and record.rows_ok == 64
    assert read_rows(tmp_path / "out" / "scored") == read_rows(tmp_path / "ref" / "scored")
    log = RunLog(Path(str(job.state_dir)) / "runs.sqlite").recent()
    assert [r.status for r in log] == ["succeeded", "failed"]
    assert "stopped at its budget" in (log[1].message or "")
    assert log[1].prompt_tokens + log[1].completion_tokens == 16 * PER_REQUEST


def test_the_run_record_keeps_the_cost_at_catalog_prices(
    tmp_path: Path, make_job: Any
) -> None:
    from ai_query.catalog import Catalog
    from ai_query.engine.backends.deterministic import DeterministicBackend
    from ai_query.engine.local import LocalEngine

    data = {"endpoints": [{"name": "paid", "price": {"input_per_million": 1000.0,
                                                      "output_per_million": 2000.0},
                           "config": {"served_entities": [
                               {"entity_name": "smollm2-135m-instruct"}]}}]}
    engine = LocalEngine(Catalog.from_data(data), backend_factory=DeterministicBackend)
    write_reviews(tmp_path / "data" / "reviews.parquet", reviews(10))
    record = run_job(make_job(sql=SQL.replace("'smollm2-135m-instruct'", "'paid'")),
                     engine=engine)
    assert record.cost == pytest.approx(10 * (8 * 0.001 + 10 * 0.002))
    assert RunLog(Path(str(tmp_path / "out" / "scored.ai_query")) / "runs.sqlite").recent()[
        0].cost == pytest.approx(record.cost)


CLI_JOB = '''
name = "budgeted"
sql = """
SELECT id, ai_query('smollm2-135m-instruct', concat('One word for this review: ', review),
                    modelParameters => named_struct('max_tokens', 4), failOnError => false) AS v
FROM reviews"""
key = ["id"]
max_rows_per_batch = 8
max_tokens = 600
inputs = {reviews = "data/reviews.parquet"}
output = "out/budgeted"
'''


@pytest.mark.slow
def test_ai_query_jobs_run_stops_at_its_budget_and_resumes_when_raised(tmp_path: Path) -> None:
    """``ai-query jobs run`` with the real model: the job file's budget (about 1.5 batches of
    8 rows) stops the run; run again with ``--max-tokens`` raised, it resumes after the
    committed batch, the rows answered before the stop come from the result cache, and every
    row is answered once in all."""
    import shutil
    import subprocess
    import sys

    write_reviews(tmp_path / "data" / "reviews.parquet",
                  [(i, f"Item {i}: it was fine.") for i in range(24)])
    (tmp_path / "job.toml").write_text(CLI_JOB)
    exe = shutil.which("ai-query", path=str(Path(sys.executable).parent)) or "ai-query"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, "jobs", "run", "job.toml", "--quiet", *extra], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)

    first = run()
    assert first.returncode != 0 and "stopped at its budget (max_tokens 600" in first.stderr
    second = run("--max-tokens", "100000")
    assert second.returncode == 0, second.stderr
    [done, stopped] = RunLog(tmp_path / "out" / "budgeted.ai_query" / "runs.sqlite").recent()[:2]
    assert (stopped.status, done.status) == ("failed", "succeeded")
    assert stopped.prompt_tokens + stopped.completion_tokens <= 600
    assert done.rows_skipped == 8  # the committed batch is kept
    assert done.cache_hits >= 1  # answers given before the stop are not asked again
    assert stopped.cache_misses + done.cache_misses == 24  # each row to the model once
    rows = read_rows(tmp_path / "out" / "budgeted")
    assert [r["id"] for r in rows] == list(range(24))
    assert all(r["v"]["result"] and r["v"]["errorMessage"] is None for r in rows)
