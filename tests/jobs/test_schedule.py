"""Scheduling with APScheduler: cron parsing, bounded runs, no overlapping runs."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ai_query.errors import JobError
from ai_query.jobs.runlog import RunLog
from ai_query.jobs.runner import run_job
from ai_query.jobs.schedule import ScheduledJob, cron_trigger, crontab_weekdays, run_schedule
from tests.jobs.helpers import reviews, write_reviews


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        pytest.param(
            "30 2 * * *", datetime(2025, 1, 1, 12, 0), datetime(2025, 1, 2, 2, 30), id="daily"
        ),
        pytest.param(
            "0 9 * * 1", datetime(2025, 1, 1, 12, 0), datetime(2025, 1, 6, 9, 0), id="monday-is-1"
        ),
        pytest.param(
            "0 9 * * 0", datetime(2025, 1, 1, 12, 0), datetime(2025, 1, 5, 9, 0), id="sunday-is-0"
        ),
        pytest.param(
            "0 9 * * 7", datetime(2025, 1, 1, 12, 0), datetime(2025, 1, 5, 9, 0), id="sunday-is-7"
        ),
        pytest.param(
            "0 9 * * 0-1",
            datetime(2025, 1, 1, 12, 0),
            datetime(2025, 1, 5, 9, 0),
            id="range-from-sunday",
        ),
        pytest.param(
            "*/15 * * * * *",
            datetime(2025, 1, 1, 12, 0, 1),
            datetime(2025, 1, 1, 12, 0, 15),
            id="seconds",
        ),
    ],
)
def test_cron_expressions_follow_crontab(
    expression: str, after: datetime, expected: datetime
) -> None:
    trigger = cron_trigger(expression, timezone="UTC")
    fire = trigger.get_next_fire_time(None, after.replace(tzinfo=trigger.timezone))
    assert fire.replace(tzinfo=None) == expected


def test_weekday_names_and_errors() -> None:
    assert crontab_weekdays("1-5") == "mon-fri"
    assert crontab_weekdays("0,3,*/2") == "sun,wed,*/2"
    with pytest.raises(ValueError, match="needs 5 fields"):
        cron_trigger("* * *")
    with pytest.raises(ValueError, match="bad cron expression"):
        cron_trigger("0 25 * * *")


def test_bounded_schedule_fires_the_job_on_a_seconds_interval() -> None:
    fired: list[float] = []
    started = time.monotonic()
    report = run_schedule(
        [ScheduledJob("tick", "* * * * * *", lambda: fired.append(time.monotonic()))],
        max_runs=3,
        log=lambda line: None,
    )
    assert report.succeeded == 3 and len(fired) == 3
    assert time.monotonic() - started < 15  # bounded: returns after the third run


def test_a_run_still_going_is_never_overlapped() -> None:
    active, peak, lock = [0], [0], threading.Lock()

    def slow() -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(2.2)
        with lock:
            active[0] -= 1

    report = run_schedule(
        [ScheduledJob("slow", "* * * * * *", slow)], until=4.5, log=lambda line: None
    )
    assert peak[0] == 1 and report.succeeded >= 1 and report.skipped >= 1


def test_failures_are_counted_and_do_not_stop_the_scheduler() -> None:
    def boom() -> None:
        raise JobError("bad run")

    lines: list[str] = []
    report = run_schedule([ScheduledJob("boom", "* * * * * *", boom)], max_runs=2, log=lines.append)
    assert report.failed == 2 and lines == ["boom: failed: bad run"] * 2
    with pytest.raises(JobError, match="schedule"):
        run_schedule([ScheduledJob("x", "bad", boom)], max_runs=1)


def test_scheduled_job_runs_record_in_the_run_log(
    tmp_path: Path, make_job: Any, det_engine: Any
) -> None:
    write_reviews(tmp_path / "data" / "reviews.parquet", reviews(20))
    job = make_job(mode="incremental", schedule="* * * * * *")
    report = run_schedule(
        [ScheduledJob(job.name, str(job.schedule), lambda: run_job(job, engine=det_engine))],
        max_runs=2,
        log=lambda line: None,
    )
    assert report.succeeded == 2
    runs = RunLog(Path(str(job.state_dir)) / "runs.sqlite").recent()
    assert [(r.status, r.kind, r.rows_processed) for r in runs] == [
        ("succeeded", "incremental", 0),
        ("succeeded", "full", 20),
    ]
