"""One batch of a job: run the query over the batch's driving rows, check the key rule, and
commit the output, the failed rows and the keys to staging (see :mod:`~ai_query.jobs.runner`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ai_query.errors import BudgetExceededError, JobError
from ai_query.jobs.failures import batch_errors_sql, column_endpoints, error_struct_columns
from ai_query.jobs.incremental import FP, RowPlanner
from ai_query.jobs.observer import RunObserver
from ai_query.jobs.outputs import sql_ident, sql_string
from ai_query.jobs.spec import JobSpec
from ai_query.jobs.staging import Staging
from ai_query.text import one_line

if TYPE_CHECKING:
    from ai_query.jobs.spark_batches import SparkBatchSQL


class BatchRunner:
    """Runs the job's SQL over the current batch and commits the result."""

    def __init__(
        self,
        con: Any,
        job: JobSpec,
        planner: RowPlanner,
        staging: Staging,
        statement: str | None,
        spark: SparkBatchSQL | None,
        observer: RunObserver | None,
    ) -> None:
        self.spark = spark
        self.con = con
        self.raw = con.raw
        self.job = job
        self.planner = planner
        self.staging = staging
        self.statement = statement
        self.observer = observer
        self.endpoints = column_endpoints(job.query, job.dialect)
        self.key_types = planner.key_types()

    def _stop_at_budget(self) -> None:
        """Stop the run, this batch uncommitted, when its budget held rows back."""
        spent = self.con.spent
        if spent is None or not spent.refused:
            return
        kept = len(self.staging.batches())
        raise BudgetExceededError(
            f"job {self.job.name} stopped at its budget ({spent.budget.describe()}; used "
            f"{spent.tokens:,} tokens, cost {spent.cost:.6g}): {kept} committed batch(es) are "
            "kept and the answers given are in the result cache; raise max_tokens/max_cost "
            "and run the job again to resume"
        )

    def run(self) -> int:
        """Run and commit the batch now under the driving input's name; returns its rows."""
        job, raw = self.job, self.raw
        rows = int(raw.execute("SELECT count(*) FROM __aiq_batch_keys").fetchall()[0][0])
        try:
            if self.spark is not None:
                from ai_query.jobs.spark_batches import spark_batch_output

                spark_batch_output(raw, self.spark, job.driving_input)
            else:
                with self.con.errors():  # a failed row: its RowError, not DuckDB's wrapper
                    raw.execute(
                        f"CREATE OR REPLACE TEMP TABLE __aiq_batch_out AS {self.statement}"
                    )
        except Exception as exc:
            self._stop_at_budget()
            kept = len(self.staging.batches())
            raise JobError(
                f"job {job.name}: a batch failed: {one_line(exc)} "
                f"({kept} committed batch(es) are kept; run the job again to resume)"
            ) from exc
        self._stop_at_budget()
        schema = raw.sql("SELECT * FROM __aiq_batch_out LIMIT 0").to_arrow_table().schema
        self._check_keys(schema.names)
        match = " AND ".join(f"o.{sql_ident(k)} = b.{sql_ident(k)}" for k in job.key)
        raw.execute(
            "CREATE OR REPLACE TEMP TABLE __aiq_batch_staged AS SELECT o.*, b.__aiq_fp "
            f"FROM __aiq_batch_out o JOIN __aiq_batch_keys b ON {match}"
        )
        errors_sql = batch_errors_sql(
            "__aiq_batch_staged",
            job.key,
            error_struct_columns(schema),
            self.endpoints,
            self.staging.run_id,
            self.key_types,
        )
        batch = self.staging.next_batch()
        self.staging.commit(
            batch,
            {
                "out": self._copy("SELECT * FROM __aiq_batch_staged"),
                "err": self._copy(errors_sql),
                "keys": self._copy("SELECT * FROM __aiq_batch_keys"),
            },
        )
        if self.observer is not None:
            self.observer.committed(rows)
        return rows

    def _copy(self, select: str) -> Any:
        def write(path: Path) -> None:
            self.raw.execute(f"COPY ({select}) TO {sql_string(str(path))} (FORMAT parquet)")

        return write

    def _check_keys(self, columns: list[str]) -> None:
        job, raw = self.job, self.raw
        missing = [k for k in job.key if k not in columns]
        if missing or FP in columns:
            raise JobError(
                f"job {job.name}: sql: the query must select the key column(s) {missing} of "
                f"{job.driving_input!r} unchanged (and no column named {FP})"
            )
        keys = ", ".join(sql_ident(k) for k in job.key)
        dupes = raw.execute(
            f"SELECT {keys} FROM __aiq_batch_out GROUP BY ALL HAVING count(*) > 1 LIMIT 3"
        ).fetchall()
        if dupes:
            raise JobError(
                f"job {job.name}: sql: gives several rows for key {dupes[0]}; "
                "a job's query must give at most one row per driving row"
            )
        match = " AND ".join(f"o.{sql_ident(k)} = b.{sql_ident(k)}" for k in job.key)
        strays = raw.execute(
            f"SELECT {', '.join('o.' + sql_ident(k) for k in job.key)} FROM __aiq_batch_out o "
            f"WHERE NOT EXISTS (SELECT 1 FROM __aiq_batch_keys b WHERE {match}) LIMIT 1"
        ).fetchall()
        if strays:
            raise JobError(
                f"job {job.name}: sql: output key {strays[0]} is not a driving row of this "
                f"batch; select the key column(s) of {job.driving_input!r} unchanged"
            )
