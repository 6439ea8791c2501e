"""``ai-query jobs``: run, retry, inspect and schedule batch jobs.

Exit codes: 0 the run succeeded (rows failed under ``failOnError => false`` do not fail it),
1 the run failed, 2 bad usage, 75 another run of the job holds its lock (try again later).
Only typer is imported at module level: this module is loaded with the CLI. Exit codes are
raised as ``SystemExit``: ``typer.Exit`` would be returned, not raised, by the top-level
``app(standalone_mode=False)``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

jobs_app = typer.Typer(
    help="Scheduled batch jobs: resumable, checkpointed, cached and incremental.",
    no_args_is_help=True,
)

#: Exit code when another run of the job holds its lock (BSD EX_TEMPFAIL).
EXIT_LOCKED = 75

JobArgument = Annotated[Path, typer.Argument(help="Job file (.toml, .yaml).")]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Bypass the result cache (every request to the model).")
]
EngineUrlOption = Annotated[
    str | None, typer.Option(help="Engine server(s) grpc://host:port, comma separated.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
MaxTokensOption = Annotated[
    int | None,
    typer.Option(min=0, help="Budget: the most tokens (prompt + output) it may spend."),
]
MaxCostOption = Annotated[
    float | None,
    typer.Option(min=0, help="Budget: the most it may cost (the endpoints' catalog prices)."),
]


@jobs_app.command("run")
def run(
    job_file: JobArgument,
    no_cache: NoCacheOption = False,
    full: Annotated[
        bool, typer.Option("--full", help="Incremental jobs: re-run every row this time.")
    ] = False,
    engine_url: EngineUrlOption = None,
    quiet: QuietOption = False,
    max_tokens: MaxTokensOption = None,
    max_cost: MaxCostOption = None,
) -> None:
    """Run a job now: resume an interrupted run (or one stopped by its budget), else start
    one; publish the output. --max-tokens/--max-cost override the job file's budget."""
    from ai_query.jobs.runner import RunRequest

    request = RunRequest(
        use_cache=False if no_cache else None, full=full, engine_url=engine_url,
        max_tokens=max_tokens, max_cost=max_cost,
    )
    _run(job_file, request, quiet)


@jobs_app.command("retry-failed")
def retry_failed(
    job_file: JobArgument,
    engine_url: EngineUrlOption = None,
    quiet: QuietOption = False,
) -> None:
    """Re-run just the rows in the job's errors table and merge them into the output."""
    from ai_query.jobs.runner import RunRequest

    _run(job_file, RunRequest(retry_failed=True, engine_url=engine_url), quiet)


def _run(job_file: Path, request: Any, quiet: bool) -> None:
    from rich.console import Console

    from ai_query.errors import JobLockedError
    from ai_query.jobs.progress import JobProgress, summary_table
    from ai_query.jobs.runner import make_output, run_job
    from ai_query.jobs.spec import load_job

    err = Console(stderr=True)
    job = load_job(job_file)
    label = make_output(job).label if job.engine == "duckdb" else job.output.label
    try:
        if quiet:
            record = run_job(job, request)
        else:
            with JobProgress(err, job.name, _calls_per_row(job)) as bar:
                record = run_job(job, request, observer=bar)
    except JobLockedError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        raise SystemExit(EXIT_LOCKED) from None
    err.print(summary_table(record, label))


def _calls_per_row(job: Any) -> int:
    from ai_query.sql.calls import find_calls
    from ai_query.sql.transpile import parse_sql

    return len(find_calls(parse_sql(job.query, job.dialect)[0]))


@jobs_app.command("status")
def status(
    job_file: JobArgument,
    limit: Annotated[int, typer.Option(help="How many runs to show.")] = 10,
) -> None:
    """Print the job's run log, whether it is running, and any interrupted run to resume."""
    from rich.console import Console

    from ai_query.jobs.lock import is_locked, read_holder
    from ai_query.jobs.progress import runs_table
    from ai_query.jobs.runlog import RunLog
    from ai_query.jobs.spec import load_job
    from ai_query.jobs.staging import Staging

    # Piped output (logs, CI) gets a wide table rather than one folded to 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    job = load_job(job_file)
    state = Path(str(job.state_dir))
    console.print(f"job {job.name}: {job.mode} -> {job.output.label}", highlight=False)
    console.print(f"schedule: {job.schedule or '(none)'}; state: {state}", highlight=False)
    lock = state / "job.lock"
    if is_locked(lock):
        holder = read_holder(lock)
        console.print(f"running now: pid {holder.get('pid')} since {holder.get('started')}")
    staged = Staging(state / "staging").batches()
    if staged:
        console.print(f"{len(staged)} committed batch(es) staged: the next run resumes after them")
    if not (state / "runs.sqlite").exists():
        console.print("no runs yet")
        return
    log = RunLog(state / "runs.sqlite")
    try:
        console.print(runs_table(log.recent(limit), f"runs of {job.name} (newest first)"))
    finally:
        log.close()


@jobs_app.command("schedule")
def schedule(
    job_files: Annotated[list[Path], typer.Argument(help="Job files with a `schedule`.")],
    max_runs: Annotated[
        int | None, typer.Option(help="Stop after this many runs (all jobs together).")
    ] = None,
    until: Annotated[
        float | None, typer.Option("--for", help="Stop after this many seconds.")
    ] = None,
    no_cache: NoCacheOption = False,
    engine_url: EngineUrlOption = None,
) -> None:
    """Run jobs on their cron schedules in the foreground (Ctrl-C stops).

    Exits 1 when a run failed (with --max-runs or --for), else 0.
    """
    from rich.console import Console

    from ai_query.errors import JobError
    from ai_query.jobs.runner import RunRequest, run_job
    from ai_query.jobs.schedule import ScheduledJob, run_schedule
    from ai_query.jobs.spec import load_job

    err = Console(stderr=True)
    request = RunRequest(use_cache=False if no_cache else None, engine_url=engine_url)
    entries = []
    for path in job_files:
        job = load_job(path)
        if not job.schedule:
            raise JobError(f"job {job.name} ({path}) has no schedule")

        def once(path: Path = path) -> None:
            run_job(load_job(path), request)  # re-read: edits apply from the next run

        entries.append(ScheduledJob(job.name, job.schedule, once))
        err.print(f"scheduled {job.name}: {job.schedule}", highlight=False)

    def log(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    report = run_schedule(entries, max_runs=max_runs, until=until, log=log)
    err.print(
        f"scheduler stopped: {report.succeeded} succeeded, {report.failed} failed, "
        f"{report.skipped} skipped",
        highlight=False,
    )
    if report.failed:
        raise SystemExit(1)
