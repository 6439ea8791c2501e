"""Jobs on real DuckDB and real vLLM with the bundled chat model (slow).

One module-scoped reference run over 500 rows; then: the same run answered from the cache
without a model call, a run killed with SIGKILL (a subprocess) and resumed, checked row by
row against the reference, an incremental run after adding and changing rows, failed rows
retried, and a scheduled run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ai_query.engine.process.lifeline import descendants
from ai_query.errors import JobLockedError
from ai_query.jobs.runlog import RunLog
from ai_query.jobs.runner import RunRequest, run_job
from ai_query.jobs.schedule import ScheduledJob, run_schedule
from ai_query.jobs.spec import JobSpec, load_job
from tests.jobs.helpers import read_rows, write_reviews
from tests.processes import engine_cores, wait_gone

pytestmark = pytest.mark.slow

N = 500
MOODS = ["great", "bad", "fine", "awful", "lovely", "broken", "perfect", "noisy"]
JOB = '''
name = "{name}"
sql = """
SELECT id, review,
       ai_query('smollm2-135m-instruct', concat('One word for this review: ', review),
                modelParameters => named_struct('max_tokens', 4), failOnError => false) AS verdict
FROM reviews"""
key = ["id"]
mode = "incremental"
max_rows_per_batch = 100
inputs = {{reviews = "data/reviews.parquet"}}
output = "out/verdicts"
'''


def _rows(n: int, start: int = 0, tag: str = "") -> list[tuple[int, str]]:
    return [(i, f"Item {i}{tag}: it was {MOODS[i % len(MOODS)]}.") for i in range(start, start + n)]


def _job(root: Path, name: str, rows: list[tuple[int, str]]) -> JobSpec:
    write_reviews(root / "data" / "reviews.parquet", rows)
    (root / "job.toml").write_text(JOB.format(name=name))
    return load_job(root / "job.toml")


def _output(job: JobSpec) -> list[dict[str, Any]]:
    return read_rows(Path(str(job.output.path)))


@pytest.fixture(scope="module")
def reference(real_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("reference")
    job = _job(root, "verdicts", _rows(N))
    calls = real_engine.model_calls
    record = run_job(job, engine=real_engine)
    return {
        "root": root,
        "job": job,
        "record": record,
        "calls": real_engine.model_calls - calls,
        "rows": _output(job),
    }


def test_reference_run(reference: dict[str, Any]) -> None:
    record, rows = reference["record"], reference["rows"]
    assert (record.status, record.rows_ok, record.rows_failed, record.output_rows) == (
        "succeeded",
        N,
        0,
        N,
    )
    assert reference["calls"] == N and record.completion_tokens > 0 and record.prompt_tokens > 0
    assert [r["id"] for r in rows] == list(range(N))
    assert all(r["verdict"]["result"] and r["verdict"]["errorMessage"] is None for r in rows)


def test_second_run_is_answered_from_the_cache(reference: dict[str, Any], real_engine: Any) -> None:
    calls = real_engine.model_calls
    record = run_job(reference["job"], RunRequest(full=True), engine=real_engine)
    assert real_engine.model_calls == calls  # measured: not one row reached vLLM
    assert (record.rows_processed, record.cache_hits, record.cache_misses) == (N, N, 0)
    assert record.completion_tokens == 0
    assert _output(reference["job"]) == reference["rows"]


def test_killed_run_resumes_with_every_row_once(
    reference: dict[str, Any], real_engine: Any, tmp_path: Path
) -> None:
    job = _job(tmp_path, "verdicts-killed", _rows(N))  # its own state and cache
    staging = Path(str(job.state_dir)) / "staging"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    # SIGKILL of the job's own process only (as a scheduler kills a job): its engine server
    # and vLLM's engine processes must then go by themselves.
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("ai-query")), "jobs", "run", "job.toml", "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(staging.glob("*.keys.parquet")):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "no batch committed in 240 s"
            time.sleep(0.2)
        with pytest.raises(JobLockedError):  # the running job holds its lock
            run_job(job, engine=real_engine)
        tree = descendants(proc.pid)
        assert engine_cores(proc.pid), "the job's vLLM engine should be running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert wait_gone(tree) == [], "engine processes outlived the killed job"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    committed = len(list(staging.glob("*.keys.parquet")))
    assert 1 <= committed < N // 100 and not Path(str(job.output.path)).exists()
    record = run_job(job, engine=real_engine)
    assert record.rows_skipped == committed * 100 and record.rows_processed == N - committed * 100
    rows = _output(job)
    assert [r["id"] for r in rows] == list(range(N))  # every input row exactly once
    mismatched = [r["id"] for r, ref in zip(rows, reference["rows"], strict=True) if r != ref]
    assert mismatched == []
    runs = RunLog(Path(str(job.state_dir)) / "runs.sqlite").recent()
    assert [r.status for r in runs] == ["succeeded", "interrupted"] and runs[0].run_id == runs[
        1
    ].run_id


def test_incremental_run_touches_only_new_and_changed_rows(
    reference: dict[str, Any], real_engine: Any
) -> None:
    job, before = reference["job"], {r["id"]: r for r in reference["rows"]}
    changed = {
        7: "Item 7: it was astonishing.",
        123: "Item 123: it was dull.",
        499: "Item 499: meh.",
    }
    rows = [(i, changed.get(i, text)) for i, text in _rows(N)] + _rows(20, start=N, tag=" (new)")
    write_reviews(Path(str(reference["root"])) / "data" / "reviews.parquet", rows)
    calls = real_engine.model_calls
    record = run_job(job, engine=real_engine)
    assert (record.kind, record.rows_processed, record.rows_skipped) == ("incremental", 23, N - 3)
    assert real_engine.model_calls - calls == 23
    after = {r["id"]: r for r in _output(job)}
    assert sorted(after) == list(range(N + 20))
    assert all(after[i] == before[i] for i in range(N) if i not in changed)
    assert all(after[i]["review"] == text for i, text in changed.items())


def test_failed_rows_land_in_the_errors_table_and_are_retried(
    real_engine: Any, tmp_path: Path
) -> None:
    rows = _rows(30)
    for i in (4, 17, 25):
        rows[i] = (i, f"{i} " + "word " * 3000)  # over the model's 2048-token context
    job = _job(tmp_path, "verdicts-errors", rows)
    record = run_job(job, engine=real_engine)
    assert (record.status, record.rows_ok, record.rows_failed) == ("succeeded", 27, 3)
    errors = read_rows(tmp_path / "out" / "verdicts_errors")
    assert [e["id"] for e in errors] == [4, 17, 25]
    assert all(
        "maximum context length" in e["message"] and e["endpoint"] == "smollm2-135m-instruct"
        for e in errors
    )
    output = {r["id"]: r for r in _output(job)}
    calls = real_engine.model_calls
    retry = run_job(job, RunRequest(retry_failed=True), engine=real_engine)
    assert (retry.kind, retry.rows_processed, retry.rows_failed) == ("retry", 3, 3)
    assert real_engine.model_calls - calls == 3  # just those rows
    again = read_rows(tmp_path / "out" / "verdicts_errors")
    assert [e["id"] for e in again] == [4, 17, 25]
    assert all(
        a["failed_at"] > e["failed_at"] and a["run_id"] == retry.run_id
        for a, e in zip(again, errors, strict=True)
    )
    assert {r["id"]: r for r in _output(job)} == output


def test_schedule_fires_the_job(real_engine: Any, tmp_path: Path) -> None:
    job = _job(tmp_path, "verdicts-scheduled", _rows(20))
    report = run_schedule(
        [ScheduledJob(job.name, "* * * * * *", lambda: run_job(job, engine=real_engine))],
        max_runs=2,
        log=lambda line: None,
    )
    assert (report.succeeded, report.failed) == (2, 0)
    runs = RunLog(Path(str(job.state_dir)) / "runs.sqlite").recent()
    assert [(r.kind, r.rows_processed) for r in runs] == [("incremental", 0), ("full", 20)]
    shutil.rmtree(tmp_path / "out")
