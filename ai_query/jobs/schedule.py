"""Run jobs on their cron schedules, in the foreground, with APScheduler 3.

Each job is an APScheduler job with a :class:`~apscheduler.triggers.cron.CronTrigger`,
``max_instances=1`` (a run still going when the next time comes is skipped, not stacked) and
``coalesce=True`` (missed times run once). Across processes, the job's file lock
(:mod:`ai_query.jobs.lock`) keeps a second run from starting; it is reported as skipped.

Cron expressions have 5 fields (``minute hour day month weekday``, as in crontab) or 6 with
seconds first (``second minute hour day month weekday``, as in Quartz/Spring). Weekday numbers
follow crontab (0 or 7 = Sunday) — APScheduler 3's ``from_crontab`` counts from Monday, so the
fields are given to ``CronTrigger`` by name instead; weekday steps (``*/2``) follow APScheduler
(Monday first), so prefer names or lists there (``mon,wed,fri``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ai_query.errors import JobError, JobLockedError

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def cron_trigger(expression: str, timezone: Any = None) -> Any:
    """An APScheduler ``CronTrigger`` for a 5- or 6-field cron expression.

    Raises:
        ValueError: naming the expression and what is wrong with it.
    """
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) == 5:
        second, (minute, hour, day, month, weekday) = "0", fields
    elif len(fields) == 6:
        second, minute, hour, day, month, weekday = fields
    else:
        raise ValueError(
            f"cron expression {expression!r} needs 5 fields (minute hour day month weekday) "
            f"or 6 (second first), got {len(fields)}"
        )
    try:
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=crontab_weekdays(weekday),
            timezone=timezone,
        )
    except ValueError as exc:
        raise ValueError(f"bad cron expression {expression!r}: {exc}") from exc


def crontab_weekdays(text: str) -> str:
    """A crontab weekday field with its numbers (0/7 = Sunday) written as names."""
    named = re.sub(r"(?<![/\d])([0-7])(?!\d)", lambda m: _WEEKDAYS[int(m.group(1))], text)
    # APScheduler ranges run Monday..Sunday: crontab's "0-N" (Sunday first) is "sun,mon-N".
    return re.sub(r"\bsun-(mon|tue|wed|thu|fri|sat)\b", r"sun,mon-\1", named)


@dataclass(frozen=True)
class ScheduledJob:
    """A job to run on a schedule."""

    name: str
    """Job name (the scheduler's job id)."""
    schedule: str
    """Cron expression."""
    run: Callable[[], Any]
    """Runs the job once; raises on failure."""


@dataclass
class ScheduleReport:
    """What happened while the scheduler ran."""

    succeeded: int = 0
    """Runs that finished."""
    failed: int = 0
    """Runs that raised."""
    skipped: int = 0
    """Fire times skipped because a run of the job was still going."""
    messages: list[str] = field(default_factory=list)
    """One line per failed or skipped run."""

    @property
    def runs(self) -> int:
        """Runs started (succeeded or failed)."""
        return self.succeeded + self.failed


def run_schedule(
    jobs: list[ScheduledJob],
    *,
    max_runs: int | None = None,
    until: float | None = None,
    log: Callable[[str], None] = print,
) -> ScheduleReport:
    """Run ``jobs`` on their schedules until interrupted, ``max_runs`` runs, or ``until`` seconds.

    Runs in progress when it stops are waited for. Skipped fire times do not count as runs.

    Raises:
        JobError: when a job's schedule is missing or invalid.
    """
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler()
    report = ScheduleReport()
    lock = threading.Condition()
    active = [0]  # runs in progress: the scheduler returns only once they have finished

    def stop_when_done() -> None:
        if max_runs is not None and report.runs >= max_runs and scheduler.running:
            scheduler.shutdown(wait=False)

    def fire(job: ScheduledJob) -> None:
        with lock:
            if max_runs is not None and report.runs + active[0] >= max_runs:
                return  # enough runs started already
            active[0] += 1
        try:
            job.run()
        except JobLockedError as exc:
            with lock:
                report.skipped += 1
                report.messages.append(f"{job.name}: skipped: {exc}")
            log(f"{job.name}: skipped: {exc}")
        except Exception as exc:  # noqa: BLE001 - one failed run must not stop the scheduler
            with lock:
                report.failed += 1
                report.messages.append(f"{job.name}: failed: {exc}")
            log(f"{job.name}: failed: {exc}")
        else:
            with lock:
                report.succeeded += 1
            log(f"{job.name}: succeeded")
        with lock:
            active[0] -= 1
            lock.notify_all()
            stop_when_done()

    def overlapped(event: JobEvent) -> None:
        with lock:
            report.skipped += 1
            report.messages.append(f"{event.job_id}: skipped: the previous run is still going")
        log(f"{event.job_id}: skipped: the previous run is still going")

    for job in jobs:
        try:
            trigger = cron_trigger(job.schedule)
        except ValueError as exc:
            raise JobError(f"job {job.name}: schedule: {exc}") from exc
        scheduler.add_job(
            fire,
            trigger,
            args=[job],
            id=job.name,
            name=job.name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=60,
        )
    scheduler.add_listener(overlapped, EVENT_JOB_MAX_INSTANCES)
    timer = None
    if until is not None:
        timer = threading.Timer(until, lambda: scheduler.running and scheduler.shutdown(wait=False))
        timer.daemon = True
        timer.start()
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if timer is not None:
            timer.cancel()
        with lock:
            lock.wait_for(lambda: active[0] == 0)
    return report
