"""Run a job: choose the rows, run the SQL batch by batch, commit each batch, publish.

One run, under the job's lock:

1. load the inputs into DuckDB and fingerprint the driving rows
   (:mod:`~ai_query.jobs.incremental`);
2. open the staging area, resuming an interrupted run of the same plan
   (:mod:`~ai_query.jobs.staging`);
3. for each batch of at most ``max_rows_per_batch`` to-do rows: put them under the driving
   input's name, run the job's SQL (``ai_query`` calls go through the result cache,
   :mod:`~ai_query.jobs.cache`), check the key rule, and commit the output, the failed rows
   and the batch's keys;
4. publish the output and the errors table atomically (:mod:`~ai_query.jobs.outputs`), save the
   fingerprints, clear the staging area;

and record the attempt in the run log (:mod:`~ai_query.jobs.runlog`). With ``failOnError``
true the first failed row stops the run with :class:`JobError`; the batches committed before
it stay staged, and the next run resumes after them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ai_query.engine.core.budget import Budget
from ai_query.errors import AIQueryError, JobError
from ai_query.jobs.batches import BatchRunner
from ai_query.jobs.failures import count_failed
from ai_query.jobs.incremental import Plan, RowPlanner
from ai_query.jobs.lock import JobLock
from ai_query.jobs.observer import RunObserver
from ai_query.jobs.outputs import (
    DeltaOutput,
    DuckDBTableOutput,
    Output,
    ParquetDirOutput,
    errors_output_for,
    sql_string,
)
from ai_query.jobs.runlog import RunLog, RunRecord, now_iso
from ai_query.jobs.spec import JobSpec
from ai_query.jobs.staging import StagedBatch, Staging
from ai_query.text import one_line

if TYPE_CHECKING:
    from ai_query.engine.core.protocol import Engine
    from ai_query.jobs.spark_batches import SparkBatchSQL


@dataclass
class RunRequest:
    """How to run a job this time (the CLI's flags)."""

    use_cache: bool | None = None
    """False bypasses the result cache; None follows the job file."""
    retry_failed: bool = False
    """Run only the rows in the errors table."""
    full: bool = False
    """Ignore the incremental state and run every row."""
    engine_url: str | None = None
    """Engine server(s) ``grpc://host:port`` (comma list) instead of an in-process engine."""
    max_tokens: int | None = None
    """This run's token budget instead of the job file's."""
    max_cost: float | None = None
    """This run's cost budget instead of the job file's."""

    def budget(self, job: JobSpec) -> Budget:
        """The run's budget: these flags where given, else the job file's."""
        return Budget(
            max_tokens=self.max_tokens if self.max_tokens is not None else job.max_tokens,
            max_cost=self.max_cost if self.max_cost is not None else job.max_cost,
        )


def run_job(
    job: JobSpec,
    request: RunRequest | None = None,
    *,
    engine: Engine | None = None,
    observer: RunObserver | None = None,
) -> RunRecord:
    """Run ``job`` once, under its lock, and record the attempt in its run log.

    Args:
        job: the validated job.
        request: flags for this run.
        engine: the engine to run ``ai_query`` rows on (default: from the job's catalog).
        observer: progress callbacks.

    Returns:
        The finished run's record (status ``succeeded``).

    Raises:
        JobLockedError: another run of the job is in progress.
        JobError: the run failed (committed batches stay staged for the next run).
    """
    request = request or RunRequest()
    state = Path(str(job.state_dir))
    state.mkdir(parents=True, exist_ok=True)
    with JobLock(state / "job.lock", job.name):
        log = RunLog(state / "runs.sqlite")
        log.mark_interrupted()
        record = RunRecord(
            run_id="-", job=job.name, mode=job.mode, started_at=now_iso(), pid=os.getpid()
        )
        rowid = log.start(record)
        started = time.perf_counter()
        try:
            _Run(job, request, engine, observer, record, lambda: log.update(rowid, record)).go()
            record.status = "succeeded"
        except KeyboardInterrupt:
            record.status, record.message = "interrupted", "interrupted by the user"
            raise
        except AIQueryError as exc:
            record.status, record.message = "failed", one_line(exc)
            raise
        except Exception as exc:
            record.status, record.message = "failed", one_line(exc)
            raise JobError(f"job {job.name} failed: {one_line(exc)}") from exc
        finally:
            record.ended_at = now_iso()
            record.wall_seconds = round(time.perf_counter() - started, 3)
            log.update(rowid, record)
            log.close()
    return record


def make_output(job: JobSpec) -> Output:
    """The output a job publishes to."""
    if job.output.table is not None:
        return DuckDBTableOutput(job.output.table)
    if job.output.format == "delta":
        return DeltaOutput(str(job.output.path))
    return ParquetDirOutput(str(job.output.path))


def _refresh(raw: Any, *outputs: Output) -> None:
    """Expose Delta outputs' current versions to DuckDB (other outputs need nothing)."""
    for output in outputs:
        if isinstance(output, DeltaOutput) and output.exists():
            output.register(raw)


class _Run:
    """The steps of one attempt (see the module docstring)."""

    def __init__(
        self,
        job: JobSpec,
        request: RunRequest,
        engine: Engine | None,
        observer: RunObserver | None,
        record: RunRecord,
        save: Any,
    ) -> None:
        self.job = job
        self.request = request
        self.engine = engine
        self.observer = observer
        self.record = record
        self.save = save

    def go(self) -> None:
        from ai_query.jobs.cache import CachingEngine, ResultCache
        from ai_query.udf.duckdb import connect

        engine = self.engine or _default_engine(self.job, self.request.engine_url)
        use_cache = self.job.cache if self.request.use_cache is None else self.request.use_cache
        cache = None
        if use_cache:
            path = self.job.cache_path or str(Path(str(self.job.state_dir)) / "cache.sqlite")
            cache = ResultCache(path)
            engine = CachingEngine(engine, cache)
        con = connect(self.job.database or ":memory:", engine.catalog, engine=engine)
        if self.observer is not None:
            con.progress.listeners.append(self.observer.answered)
        budget = self.request.budget(self.job)
        if budget.limited and self.job.engine == "spark":
            raise JobError(f"job {self.job.name}: budgets (max_tokens, max_cost) are for "
                           "engine = duckdb jobs")
        spent = con.limit(budget, f"the run of job {self.job.name}")
        spark = None
        try:
            if self.job.engine == "spark":
                from ai_query.jobs.spark_batches import SparkBatchSQL

                spark = SparkBatchSQL(self.job, engine)
                self._go(con, None, spark)
            else:
                self._go(con, con.rewrite(self.job.query, read=self.job.dialect), None)
        finally:
            tokens = (con.progress.prompt_tokens, con.progress.completion_tokens)
            if spark is not None:
                tokens = spark.tokens
                spark.close()
            self.record.prompt_tokens, self.record.completion_tokens = tokens
            self.record.cost = round(spent.cost, 9)
            if isinstance(engine, CachingEngine):
                self.record.cache_hits, self.record.cache_misses = engine.hits, engine.misses
            else:
                self.record.cache_misses = con.progress.rows
            con.close()
            if cache is not None:
                cache.close()

    def _go(self, con: Any, statement: str | None, spark: SparkBatchSQL | None) -> None:
        job, raw = self.job, con.raw
        planner = RowPlanner(raw, job)
        driving = None
        if spark is not None and job.inputs[job.driving_input].table is not None:
            raw.register("__aiq_spark_driving", spark.driving_table())
            driving = "__aiq_spark_driving"
        self.record.input_rows = planner.load_inputs(lookups=spark is None, driving=driving)
        output = make_output(job)
        errors_output = errors_output_for(output)
        _refresh(raw, output, errors_output)
        output_exists = output.exists(raw)
        has_previous = planner.load_previous(output_exists)
        errors_exist = errors_output.exists(raw)
        kind = "full"
        if self.request.retry_failed:
            if job.mode == "append":
                raise JobError(f"job {job.name}: retry-failed needs mode overwrite or incremental")
            if not (has_previous and errors_exist):
                raise JobError(
                    f"job {job.name}: no published run of this job definition to retry; "
                    "run `ai-query jobs run` first"
                )
            kind = "retry"
        elif job.mode == "incremental" and has_previous and not self.request.full:
            kind = "incremental"
        staging = Staging(Path(str(job.state_dir)) / "staging")
        staging.open(job.fingerprint(), kind)
        self.record.run_id, self.record.kind = staging.run_id, kind
        plan = planner.plan(
            kind, staging.batches(), errors_output.relation() if errors_exist else None
        )
        self.record.rows_skipped = plan.input_rows - plan.todo
        self.save()
        if self.observer is not None:
            self.observer.planned(plan)
        batches = BatchRunner(con, job, planner, staging, statement, spark, self.observer)
        for start in range(0, plan.todo, job.max_rows_per_batch):
            planner.batch(start, start + job.max_rows_per_batch)
            self.record.rows_processed += batches.run()
            self.save()
        if not self._needs_publish(plan, staging.batches(), output_exists):
            self._count_outcome(raw, staging.batches(), output, output_exists)
            staging.discard()
            return
        if not staging.batches():  # publish needs the output's columns: run an empty batch
            planner.batch(0, 0)
            batches.run()
        staged = staging.batches()
        planner.staged_views(staged)
        previous = output.relation() if output_exists else None
        tag = staging.run_id
        if job.mode == "append" and kind == "full":
            output.append(raw, planner.output_sql(kind, None), tag)
        else:
            output.replace(raw, planner.output_sql(kind, previous), tag)
        previous_errors = errors_output.relation() if errors_exist else None
        if previous_errors is not None and job.mode == "append":
            previous_errors = f"(SELECT * FROM {previous_errors} WHERE run_id <> {sql_string(tag)})"
        errors_output.replace(
            raw, planner.errors_sql(kind, previous_errors, append=job.mode == "append"), tag
        )
        planner.save_fingerprints(kind, tag)
        _refresh(raw, output)
        self._count_outcome(raw, staged, output, True)
        staging.discard()

    def _needs_publish(self, plan: Plan, staged: list[StagedBatch], output_exists: bool) -> bool:
        if staged:
            return True
        if plan.kind == "incremental":
            return plan.deleted > 0
        if plan.kind == "retry":
            return False
        return self.job.mode != "append" or not output_exists

    def _count_outcome(
        self, raw: Any, staged: list[StagedBatch], output: Output, exists: bool
    ) -> None:
        failed = count_failed(raw, [str(b.errors) for b in staged], self.job.key)
        produced = 0
        if staged:
            listing = "[" + ", ".join(sql_string(str(b.keys)) for b in staged) + "]"
            produced = int(
                raw.execute(f"SELECT count(*) FROM read_parquet({listing})").fetchall()[0][0]
            )
        self.record.rows_failed = failed
        self.record.rows_ok = max(produced - failed, 0)
        if exists and output.exists(raw):
            rows = raw.execute(f"SELECT count(*) FROM {output.relation()}").fetchall()
            self.record.output_rows = int(rows[0][0])


def _default_engine(job: JobSpec, engine_url: str | None) -> Engine:
    from ai_query.catalog import load_catalog
    from ai_query.engine.spec import EngineSpec, get_engine

    return get_engine(EngineSpec.for_urls(load_catalog(job.catalog), engine_url))
