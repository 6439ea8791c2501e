"""``ai-query jobs ...`` as a user runs it (a subprocess), on jobs without model calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ai_query.jobs.lock import JobLock
from ai_query.jobs.spec import load_job
from tests.jobs.helpers import read_rows, reviews, write_reviews

JOB = """
name = "plain"
sql = "SELECT id, upper(review) AS loud FROM reviews"
key = ["id"]
mode = "incremental"
schedule = "* * * * * *"
inputs = {reviews = "data/reviews.parquet"}
output = "out/plain"
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai_query.cli", "jobs", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    write_reviews(tmp_path / "data" / "reviews.parquet", reviews(25))
    path = tmp_path / "job.toml"
    path.write_text(JOB)
    return path


def test_run_then_status(job_file: Path, tmp_path: Path) -> None:
    done = _cli("run", str(job_file), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "rows ok" in done.stderr and "25" in done.stderr and "wall time" in done.stderr
    assert [r["loud"] for r in read_rows(tmp_path / "out" / "plain")][:1] == [
        "REVIEW 0: THE PRODUCT WAS GREAT"
    ]
    status = _cli("status", str(job_file), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "succeeded" in status.stdout and "incremental" in status.stdout


def test_locked_job_exits_75_and_bad_job_exits_1(job_file: Path, tmp_path: Path) -> None:
    job = load_job(job_file)
    with JobLock(Path(str(job.state_dir)) / "job.lock", job.name):
        locked = _cli("run", str(job_file), "--quiet", cwd=tmp_path)
    assert locked.returncode == 75 and "already running" in locked.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(JOB.replace('mode = "incremental"', 'mode = "sometimes"'))
    failed = _cli("run", str(bad), cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.strip().startswith("error:") and "mode: Input should be" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1


def test_schedule_runs_a_bounded_number_of_times(job_file: Path, tmp_path: Path) -> None:
    done = _cli("schedule", str(job_file), "--max-runs", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("plain: succeeded") == 2 and "2 succeeded, 0 failed" in done.stderr
    no_schedule = tmp_path / "once.toml"
    no_schedule.write_text(JOB.replace('schedule = "* * * * * *"', ""))
    refused = _cli("schedule", str(no_schedule), "--max-runs", "1", cwd=tmp_path)
    assert refused.returncode == 1 and "has no schedule" in refused.stderr
