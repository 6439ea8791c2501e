"""Which driving rows a run sends to the model, and the table it publishes.

Every driving row gets a fingerprint, ``__aiq_fp``: the MD5 of the row as JSON (all its
columns). After each successful publish the (key, fingerprint) pairs are saved in
``<state_dir>/fingerprints.parquet`` with the job's fingerprint in ``published.json``. A run
then chooses its rows by *kind*:

* ``full`` (modes overwrite and append, a first incremental run, or a job whose SQL, inputs or
  catalog changed): every row;
* ``incremental``: rows whose key is new or whose fingerprint changed (a row is re-run when any
  of its columns changed; an unchanged request inside it is still answered by the result
  cache, so only changed requests reach the model);
* ``retry``: rows whose key is in the errors table.

Rows already committed in staging with the same fingerprint are skipped (resume). Publishing
an incremental or retry run merges: the previous output's rows for keys still in the input
and not re-run this time, plus this run's rows; deleted keys disappear.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_query.errors import JobError
from ai_query.jobs.outputs import sql_ident, sql_string
from ai_query.jobs.spec import InputSpec, JobSpec
from ai_query.jobs.staging import StagedBatch, write_durably

FP = "__aiq_fp"


@dataclass(frozen=True)
class Plan:
    """What a run will do."""

    kind: str
    """full, incremental or retry."""
    input_rows: int
    """Rows in the driving input."""
    todo: int
    """Rows to run now."""
    resumed: int
    """Rows committed by an interrupted run of the same plan and skipped now."""
    new: int = 0
    """Incremental: keys not seen before."""
    changed: int = 0
    """Incremental: keys whose row changed."""
    deleted: int = 0
    """Incremental: keys gone from the input (dropped from the output)."""


def input_relation(spec: InputSpec) -> str:
    """SQL reading one input."""
    if spec.table is not None:
        return sql_ident(spec.table)
    path = str(spec.path)
    if Path(path).is_dir():
        suffix = {"parquet": "*.parquet", "csv": "*.csv", "json": "*.json"}[spec.file_format]
        path = str(Path(path) / "**" / suffix)
    if spec.file_format == "csv":
        return f"read_csv({sql_string(path)}, header=true, auto_detect=true)"
    if spec.file_format == "json":
        return f"read_json_auto({sql_string(path)})"
    return f"read_parquet({sql_string(path)}, union_by_name=true)"


class RowPlanner:
    """Driving rows, fingerprints, the run's to-do rows and the published table, in DuckDB."""

    def __init__(self, con: Any, job: JobSpec) -> None:
        self.con = con
        self.job = job
        self.state = Path(str(job.state_dir))
        self.key = list(job.key)
        self.keys = ", ".join(sql_ident(k) for k in self.key)
        self.has_previous = False

    def _match(self, left: str, right: str, with_fp: bool = False) -> str:
        cols = [*self.key, FP] if with_fp else self.key
        return " AND ".join(f"{left}.{sql_ident(c)} = {right}.{sql_ident(c)}" for c in cols)

    def load_inputs(self, *, lookups: bool = True, driving: str | None = None) -> int:
        """Register lookup inputs as views and load the driving rows; returns their count.

        Args:
            lookups: register the other inputs as DuckDB views (False when Spark reads them).
            driving: SQL reading the driving rows instead of the input's own (e.g. a
                registered Arrow table of a Spark table).

        Raises:
            JobError: when a key column is missing, NULL or not unique.
        """
        for name, spec in self.job.inputs.items():
            if lookups and name != self.job.driving_input and spec.table != name:
                self.con.execute(
                    f"CREATE OR REPLACE TEMP VIEW {sql_ident(name)} AS "
                    f"SELECT * FROM {input_relation(spec)}"
                )
        source = driving or input_relation(self.job.inputs[self.job.driving_input])
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE __aiq_source AS SELECT s.*, "
            f"md5(CAST(to_json(s) AS VARCHAR)) AS {FP} FROM {source} s"
        )
        columns = [r[0] for r in self.con.execute("DESCRIBE __aiq_source").fetchall()]
        missing = [k for k in self.key if k not in columns]
        if missing:
            raise JobError(
                f"job {self.job.name}: key column(s) {missing} not in input "
                f"{self.job.driving_input!r} (columns: {', '.join(columns[:-1])})"
            )
        nulls = " OR ".join(f"{sql_ident(k)} IS NULL" for k in self.key)
        bad = self.con.execute(f"SELECT count(*) FROM __aiq_source WHERE {nulls}").fetchall()[0][0]
        if bad:
            raise JobError(f"job {self.job.name}: {bad} driving row(s) have a NULL key {self.key}")
        dupes = self.con.execute(
            f"SELECT {self.keys}, count(*) FROM __aiq_source GROUP BY ALL HAVING count(*) > 1 "
            "LIMIT 3"
        ).fetchall()
        if dupes:
            raise JobError(
                f"job {self.job.name}: key {self.key} is not unique in input "
                f"{self.job.driving_input!r}, e.g. {[d[:-1] for d in dupes]}"
            )
        return int(self.con.execute("SELECT count(*) FROM __aiq_source").fetchall()[0][0])

    def key_types(self) -> dict[str, str]:
        """DuckDB type of each key column."""
        rows = self.con.execute("DESCRIBE __aiq_source").fetchall()
        return {r[0]: r[1] for r in rows if r[0] in self.key}

    def load_previous(self, output_exists: bool) -> bool:
        """Load the last publish's fingerprints when they belong to this job definition."""
        marker, prints = self.state / "published.json", self.state / "fingerprints.parquet"
        try:
            published = json.loads(marker.read_text())
        except (OSError, ValueError):
            published = {}
        self.has_previous = (
            output_exists and published.get("job") == self.job.fingerprint() and prints.is_file()
        )
        if self.has_previous:
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE __aiq_prev AS SELECT {self.keys}, {FP} "
                f"FROM read_parquet({sql_string(str(prints))})"
            )
        return self.has_previous

    def plan(self, kind: str, staged: list[StagedBatch], errors_relation: str | None) -> Plan:
        """Create ``__aiq_todo`` (the rows to run, numbered ``__aiq_n``) and count them."""
        self._staged_keys(staged)
        conditions = [f"NOT {self._in('__aiq_staged', 's', with_fp=True)}"]
        if kind == "incremental":
            conditions.append(f"NOT {self._in('__aiq_prev', 's', with_fp=True)}")
        elif kind == "retry":
            if errors_relation is None:
                raise JobError(f"job {self.job.name}: no errors table yet; nothing to retry")
            conditions.append(self._in(errors_relation, "s"))
        order = ", ".join(f"s.{sql_ident(k)}" for k in self.key)
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE __aiq_todo AS SELECT s.*, "
            f"row_number() OVER (ORDER BY {order}) - 1 AS __aiq_n FROM __aiq_source s "
            f"WHERE {' AND '.join(conditions)}"
        )
        count = self._count
        counts = {"new": 0, "changed": 0, "deleted": 0}
        if kind == "incremental":
            counts["new"] = count(f"__aiq_source s WHERE NOT {self._in('__aiq_prev', 's')}")
            counts["changed"] = count(
                f"__aiq_source s JOIN __aiq_prev p ON {self._match('p', 's')} "
                f"WHERE p.{FP} <> s.{FP}"
            )
            counts["deleted"] = count(f"__aiq_prev p WHERE NOT {self._in('__aiq_source', 'p')}")
        return Plan(
            kind=kind,
            input_rows=count("__aiq_source"),
            todo=count("__aiq_todo"),
            resumed=count(f"__aiq_staged k WHERE {self._in('__aiq_source', 'k', with_fp=True)}"),
            **counts,
        )

    def _in(self, relation: str, alias: str, *, with_fp: bool = False) -> str:
        """``EXISTS``: a row of ``relation`` has the key (and fingerprint) of row ``alias``."""
        return f"EXISTS (SELECT 1 FROM {relation} x WHERE {self._match('x', alias, with_fp)})"

    def _count(self, from_sql: str) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM {from_sql}").fetchall()[0][0])

    def _staged_keys(self, staged: list[StagedBatch]) -> None:
        if staged:
            files = _listing([str(b.keys) for b in staged])
            source = f"SELECT DISTINCT {self.keys}, {FP} FROM read_parquet({files})"
        else:
            source = f"SELECT {self.keys}, {FP} FROM __aiq_source WHERE false"
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE __aiq_staged AS {source}")

    def batch(self, start: int, stop: int) -> int:
        """Put to-do rows [start, stop) under the driving input's name; returns the count."""
        where = f"__aiq_n >= {int(start)} AND __aiq_n < {int(stop)}"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {sql_ident(self.job.driving_input)} AS "
            f"SELECT * EXCLUDE ({FP}, __aiq_n) FROM __aiq_todo WHERE {where} ORDER BY __aiq_n"
        )
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE __aiq_batch_keys AS SELECT {self.keys}, {FP} "
            f"FROM __aiq_todo WHERE {where}"
        )
        return self._count("__aiq_batch_keys")

    def staged_views(self, staged: list[StagedBatch]) -> None:
        """Views over the committed batches that still match the input: ``__aiq_processed``
        (their keys), ``__aiq_new_rows`` and ``__aiq_new_errors``."""
        self._staged_keys(staged)
        self.con.execute(
            "CREATE OR REPLACE TEMP VIEW __aiq_processed AS SELECT * FROM __aiq_staged k "
            f"WHERE {self._in('__aiq_source', 'k', with_fp=True)}"
        )
        for view, files in (
            ("__aiq_new_rows", [str(b.output) for b in staged]),
            ("__aiq_new_errors", [str(b.errors) for b in staged]),
        ):
            # A row staged twice (never expected) is published once: the latest batch wins.
            partition = self.keys + (', "column"' if view == "__aiq_new_errors" else "")
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * EXCLUDE ({FP}, __aiq_file, "
                f"__aiq_rn) FROM (SELECT *, row_number() OVER (PARTITION BY {partition} "
                "ORDER BY __aiq_file DESC) "
                f"AS __aiq_rn FROM read_parquet({_listing(files)}, union_by_name=true, "
                f"filename='__aiq_file') r WHERE {self._in('__aiq_source', 'r', with_fp=True)}) "
                "WHERE __aiq_rn = 1"
            )

    def output_sql(self, kind: str, previous: str | None) -> str:
        """The rows to publish: this run's, merged with ``previous`` for incremental/retry."""
        order = f" ORDER BY {self.keys}"
        if previous is None or kind not in ("incremental", "retry"):
            return f"SELECT * FROM __aiq_new_rows{order}"
        merged = f"{self._kept(previous)} UNION ALL BY NAME SELECT * FROM __aiq_new_rows"
        return f"SELECT * FROM ({merged}){order}"

    def errors_sql(self, kind: str, previous: str | None, append: bool) -> str:
        """The errors table to publish (see :mod:`ai_query.jobs.failures`)."""
        order = f' ORDER BY {self.keys}, "column"'
        if previous is None or (kind == "full" and not append):
            return f"SELECT * FROM __aiq_new_errors{order}"
        kept = f"SELECT * FROM {previous}" if append else self._kept(previous)
        return f"SELECT * FROM ({kept} UNION ALL BY NAME SELECT * FROM __aiq_new_errors){order}"

    def _kept(self, previous: str) -> str:
        return (
            f"SELECT o.* FROM {previous} o WHERE {self._in('__aiq_source', 'o')} "
            f"AND NOT {self._in('__aiq_processed', 'o')}"
        )

    def save_fingerprints(self, kind: str, run_id: str) -> None:
        """Record the published rows' fingerprints (after the output is in place)."""
        if kind == "retry" and self.has_previous:
            rows = (
                f"SELECT * FROM __aiq_prev o WHERE NOT {self._in('__aiq_processed', 'o')} "
                f"UNION ALL SELECT {self.keys}, {FP} FROM __aiq_processed"
            )
        else:
            rows = f"SELECT {self.keys}, {FP} FROM __aiq_source"
        prints = self.state / "fingerprints.parquet"
        write_durably(
            prints,
            lambda p: self.con.execute(f"COPY ({rows}) TO {sql_string(str(p))} (FORMAT parquet)"),
        )
        marker = {
            "job": self.job.fingerprint(),
            "run_id": run_id,
            "kind": kind,
            "published": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_durably(self.state / "published.json", lambda p: p.write_text(json.dumps(marker)))


def _listing(files: list[str]) -> str:
    return "[" + ", ".join(sql_string(f) for f in files) + "]"
