"""Scheduled batch jobs: resumable, checkpointed, cached and incremental.

A job file names a query, its inputs, a key and an output (:mod:`~ai_query.jobs.spec`);
``ai-query jobs run JOB`` runs it (:mod:`~ai_query.jobs.runner`), ``jobs schedule`` runs jobs
on their cron schedules (:mod:`~ai_query.jobs.schedule`). The modules:

=================  ===============================================================
``spec``           the job file model and its validation
``runner``         one run: plan, batches, publish, run log
``batches``        one batch: run the query, check the key rule, commit to staging
``spark_batches``  the query of each batch on Spark SQL (``engine = "spark"``)
``incremental``    fingerprints, which rows to run, the merged table to publish
``staging``        committed batches on disk (checkpoints for resume)
``outputs``        atomic publish: Parquet directory, DuckDB table, Delta table
``cache``          the persistent result cache, as a wrapper engine
``failures``       failed rows and the errors table
``runlog``         the run log table
``lock``           one run per job at a time
``schedule``       cron scheduling with APScheduler
``progress``       the progress bar and the summary
``cli``            the ``ai-query jobs`` commands
=================  ===============================================================

Nothing here is imported by ``import ai_query``; DuckDB (and Spark) load only when a job
runs.
"""

from __future__ import annotations
