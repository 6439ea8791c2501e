"""The terminal side of a run: a progress bar (rows done/total, rows/s, tokens/s, ETA) and
the end-of-run summary."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ai_query.jobs.incremental import Plan
from ai_query.jobs.runlog import RunRecord


class JobProgress:
    """A :class:`~ai_query.jobs.observer.RunObserver` drawing a rich progress bar.

    Rows move when ai_query answers them (scaled by the number of calls per row) and snap to
    the committed count at each batch commit.
    """

    def __init__(self, console: Console, label: str, calls_per_row: int = 1) -> None:
        self.console = console
        self.calls_per_row = max(calls_per_row, 1)
        self._lock = threading.Lock()
        self._committed = 0
        self._answered = 0
        self._tokens = 0
        self._started = time.perf_counter()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[rows]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=None, rate="", rows="planning")

    def __enter__(self) -> JobProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def planned(self, plan: Plan) -> None:
        """Set the total; say what is skipped."""
        self._started = time.perf_counter()
        self._progress.update(self._task, total=plan.todo, rows=f"0/{plan.todo} rows")
        notes = []
        if plan.resumed:
            notes.append(f"resuming: {plan.resumed} rows already committed")
        if plan.kind == "incremental":
            notes.append(
                f"incremental: {plan.new} new, {plan.changed} changed, {plan.deleted} deleted, "
                f"{plan.input_rows - plan.todo - plan.resumed} unchanged"
            )
        if plan.kind == "retry":
            notes.append(f"retrying {plan.todo} failed rows")
        for note in notes:
            self.console.print(note, highlight=False)

    def answered(
        self, rows: int, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0
    ) -> None:
        """Advance by answered ai_query rows."""
        with self._lock:
            self._answered += rows
            self._tokens += prompt_tokens + completion_tokens
            self._draw()

    def committed(self, rows: int) -> None:
        """Snap to the committed count."""
        with self._lock:
            self._committed += rows
            self._answered = 0
            self._draw()

    def _draw(self) -> None:
        total = self._progress.tasks[0].total or 0
        done = self._committed + self._answered / self.calls_per_row
        done = min(done, total) if total else done
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._progress.update(
            self._task,
            completed=done,
            rows=f"{done:.0f}/{total} rows",
            rate=f"{done / elapsed:.1f} rows/s, {self._tokens / elapsed:.0f} tok/s, "
            f"{self._tokens:,} tokens",
        )


def summary_table(record: RunRecord, label: str) -> Table:
    """The end-of-run summary."""
    table = Table(
        title=f"job {record.job}: {record.status}", show_header=False, title_justify="left"
    )
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("output", label),
        ("run", f"{record.run_id} ({record.kind})"),
        ("rows ok", record.rows_ok),
        ("rows failed", record.rows_failed),
        ("rows skipped", f"{record.rows_skipped} (unchanged or already committed)"),
        ("output rows", record.output_rows),
        ("cache", f"{record.cache_hits} hits, {record.cache_misses} misses"),
        ("tokens in/out", f"{record.prompt_tokens} / {record.completion_tokens}"),
        *([("cost", f"{record.cost:.6g}")] if record.cost else []),
        ("wall time", f"{record.wall_seconds:.1f} s"),
    ]
    for what, value in rows:
        table.add_row(what, str(value))
    return table


def runs_table(records: list[RunRecord], title: str) -> Table:
    """The run log, newest first."""
    table = Table(title=title, header_style="bold")
    columns = (
        "run id",
        "started",
        "status",
        "kind",
        "ok",
        "failed",
        "skipped",
        "cache hits",
        "tokens in/out",
        "wall s",
        "message",
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            r.run_id, r.started_at.replace("T", " ")[:19], r.status, r.kind, str(r.rows_ok),
            str(r.rows_failed), str(r.rows_skipped), str(r.cache_hits),
            f"{r.prompt_tokens}/{r.completion_tokens}", f"{r.wall_seconds:.1f}", r.message or "",
        )  # fmt: skip
    return table
