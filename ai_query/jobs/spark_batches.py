"""Jobs on Spark: each batch's SQL runs in Spark SQL; the rest of the job stays the same.

Planning, staging, resume and publishing are the DuckDB job machinery's; only the query runs
on Spark. Per batch, the batch's driving rows become a Spark temporary view under the driving
input's name, the query runs through :class:`ai_query.udf.spark.SparkAIQuery` (Databricks SQL,
typed results), and the result comes back as Arrow. Lookup inputs are Spark views over their
files, or Spark tables.

The ``ai_query`` UDF's Python workers send their batches over Arrow Flight to an engine server
that this process hosts on ``127.0.0.1`` for the run: it serves the job's engine, result cache
included, so a Spark job hits the same cache and the same in-process vLLM engine as a DuckDB
job. With ``--engine-url`` the job's engine is itself a Flight client of those servers.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ai_query.engine.core.protocol import Engine
from ai_query.jobs.spec import JobSpec


class SparkBatchSQL:
    """Runs a job's query on Spark, one batch of driving rows at a time."""

    def __init__(self, job: JobSpec, engine: Engine) -> None:
        from pyspark.sql import SparkSession

        from ai_query.engine.flight.server import EngineFlightServer
        from ai_query.udf.spark import local_session, register

        self.job = job
        self.server = EngineFlightServer(engine, "grpc://127.0.0.1:0", description="job")
        active = SparkSession.getActiveSession()
        self._owns_session = active is None
        self.spark = active or local_session()
        try:
            self.ai_query = register(self.spark, engine.catalog, self.server.url)
            self.statement = self.ai_query.transpile(job.query, read=job.dialect)
            self._lookups()
        except BaseException:
            self.close()
            raise

    def _lookups(self) -> None:
        for name, spec in self.job.inputs.items():
            if name == self.job.driving_input:
                continue
            if spec.table is not None:
                if spec.table != name:
                    self.spark.table(spec.table).createOrReplaceTempView(name)
                continue
            reader, path = self.spark.read, str(spec.path)
            if spec.file_format == "csv":
                frame = reader.option("header", True).option("inferSchema", True).csv(path)
            elif spec.file_format == "json":
                frame = reader.json(path)
            else:
                frame = reader.parquet(path)
            frame.createOrReplaceTempView(name)

    def driving_table(self) -> pa.Table:
        """The driving input when it is a Spark table (to fingerprint and batch in DuckDB)."""
        spec = self.job.inputs[self.job.driving_input]
        return self.spark.table(str(spec.table)).toArrow()

    def run(self, batch: pa.Table) -> pa.Table:
        """The query's rows for one batch of driving rows."""
        frame = self.spark.createDataFrame(batch)
        frame.createOrReplaceTempView(self.job.driving_input)
        return self.spark.sql(self.statement).toArrow()

    @property
    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens the engine server has answered with."""
        return self.server.stats["prompt_tokens"], self.server.stats["completion_tokens"]

    def close(self) -> None:
        """Stop the engine server, and the Spark session if this object started it."""
        try:
            if self._owns_session:
                self.spark.stop()
        finally:
            self.server.shutdown()


def spark_batch_output(raw: Any, runner: SparkBatchSQL, driving_input: str) -> None:
    """Run the batch now under ``driving_input`` in DuckDB on Spark; leave the result in
    DuckDB as ``__aiq_batch_out``."""
    from ai_query.jobs.outputs import sql_ident

    batch = raw.sql(f"SELECT * FROM {sql_ident(driving_input)}").to_arrow_table()
    result = runner.run(batch)
    raw.register("__aiq_spark_result", result)
    try:
        raw.execute(
            "CREATE OR REPLACE TEMP TABLE __aiq_batch_out AS SELECT * FROM __aiq_spark_result"
        )
    finally:
        raw.unregister("__aiq_spark_result")
