"""Publishing a job's result: a Parquet directory swapped in atomically, a DuckDB table
replaced in one transaction, or a Delta table committed once.

A Delta output (jobs on Spark) is written with delta-rs (the ``deltalake`` package): each
publish is one Delta commit, atomic by Delta's log; an append commit carries the run id, so a
resumed run publishing again finds its commit and adds nothing.

A Parquet output is a directory of ``part-*.parquet`` files. *Replace* writes the new table
into a hidden sibling directory, fsyncs it, then exchanges it with the output directory in one
``renameat2(RENAME_EXCHANGE)`` call (Linux), so a reader sees the old table or the new one and
never a mix; where the exchange is unavailable two renames are used. *Append* renames one new
file, ``part-<run id>.parquet``, into the directory; the name comes from the run id, so
publishing a resumed run again replaces its own file instead of adding rows twice.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Protocol

from ai_query.jobs.staging import fsync_dir, fsync_file

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    """A quoted SQL identifier (``schema.table`` keeps its dot)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


class Output(Protocol):
    """Somewhere a job's rows are published."""

    label: str
    """How the output is named in messages."""

    def exists(self, con: Any) -> bool:
        """True when a published table is there."""
        ...

    def relation(self) -> str:
        """SQL reading the published table (valid when :meth:`exists`)."""
        ...

    def replace(self, con: Any, select_sql: str, tag: str) -> None:
        """Publish ``select_sql``'s rows as the whole table, atomically."""
        ...

    def append(self, con: Any, select_sql: str, tag: str) -> None:
        """Add ``select_sql``'s rows, once per ``tag`` (a run id)."""
        ...


class ParquetDirOutput:
    """A directory of Parquet files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = str(self.path)

    def exists(self, con: Any = None) -> bool:
        """True when the directory holds Parquet files."""
        return self.path.is_dir() and any(self.path.glob("*.parquet"))

    def relation(self) -> str:
        """``read_parquet`` over the directory's files."""
        return f"read_parquet({sql_string(str(self.path / '*.parquet'))}, union_by_name=true)"

    def replace(self, con: Any, select_sql: str, tag: str) -> None:
        """Write a new directory beside the output, then swap it in."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.new-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a publish that was killed
        tmp = self.path.parent / f".{self.path.name}.new-{tag}"
        tmp.mkdir()
        part = tmp / "part-00000.parquet"
        con.execute(f"COPY ({select_sql}) TO {sql_string(str(part))} (FORMAT parquet)")
        fsync_file(part)
        fsync_dir(tmp)
        swap_directory(tmp, self.path)

    def append(self, con: Any, select_sql: str, tag: str) -> None:
        """Rename one new file, named after ``tag``, into the directory."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".part-{tag}.parquet.tmp"
        con.execute(f"COPY ({select_sql}) TO {sql_string(str(tmp))} (FORMAT parquet)")
        fsync_file(tmp)
        os.replace(tmp, self.path / f"part-{tag}.parquet")
        fsync_dir(self.path)


class DuckDBTableOutput:
    """A table in the job's DuckDB database."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.label = f"table {table}"

    def exists(self, con: Any) -> bool:
        """True when the table exists."""
        schema, _, name = self.table.rpartition(".")
        rows = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
            "AND (? = '' OR table_schema = ?)",
            [name, schema, schema],
        ).fetchall()
        return bool(rows[0][0])

    def relation(self) -> str:
        """The table's name."""
        return sql_ident(self.table)

    def replace(self, con: Any, select_sql: str, tag: str) -> None:
        """``CREATE OR REPLACE TABLE ... AS`` in one transaction."""
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"CREATE OR REPLACE TABLE {sql_ident(self.table)} AS {select_sql}")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def append(self, con: Any, select_sql: str, tag: str) -> None:
        """Insert the rows and record ``tag`` in one transaction (a second publish is a no-op)."""
        con.execute(
            "CREATE TABLE IF NOT EXISTS ai_query_job_appends (target VARCHAR, run_id VARCHAR)"
        )
        done = con.execute(
            "SELECT count(*) FROM ai_query_job_appends WHERE target = ? AND run_id = ?",
            [self.table, tag],
        ).fetchall()[0][0]
        if done:
            return
        con.execute("BEGIN TRANSACTION")
        try:
            if not self.exists(con):
                con.execute(f"CREATE TABLE {sql_ident(self.table)} AS {select_sql}")
            else:
                con.execute(f"INSERT INTO {sql_ident(self.table)} BY NAME {select_sql}")
            con.execute("INSERT INTO ai_query_job_appends VALUES (?, ?)", [self.table, tag])
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


class DeltaOutput:
    """A Delta table at a path, written with delta-rs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = f"delta {self.path}"
        self._view = "__aiq_delta_" + uuid.uuid4().hex[:8]

    def exists(self, con: Any = None) -> bool:
        """True when the Delta log is there."""
        return (self.path / "_delta_log").is_dir()

    def relation(self) -> str:
        """A DuckDB view of the current version (registered on first use)."""
        return self._view

    def register(self, con: Any) -> None:
        """Expose the current version to ``con`` as :meth:`relation`."""
        from deltalake import DeltaTable

        con.register(self._view, DeltaTable(str(self.path)).to_pyarrow_table())

    def replace(self, con: Any, select_sql: str, tag: str) -> None:
        """Overwrite the table (schema included) in one commit."""
        self._write(con, select_sql, tag, "overwrite")

    def append(self, con: Any, select_sql: str, tag: str) -> None:
        """Append in one commit, unless a commit of run ``tag`` is already there."""
        if self.exists():
            from deltalake import DeltaTable

            if any(c.get("ai_query_run_id") == tag for c in DeltaTable(str(self.path)).history()):
                return
        self._write(con, select_sql, tag, "append")

    def _write(self, con: Any, select_sql: str, tag: str, mode: str) -> None:
        from deltalake import CommitProperties, write_deltalake

        table = con.sql(select_sql).to_arrow_table()
        commit = CommitProperties(custom_metadata={"ai_query_run_id": tag})
        if mode == "overwrite":
            write_deltalake(
                str(self.path), table, mode="overwrite", schema_mode="overwrite",
                commit_properties=commit,
            )  # fmt: skip
        else:
            write_deltalake(str(self.path), table, mode="append", commit_properties=commit)


def errors_output_for(output: Output) -> Output:
    """The errors table beside an output: ``<dir>_errors`` or ``<table>_errors``."""
    if isinstance(output, ParquetDirOutput):
        path = output.path
        return ParquetDirOutput(path.with_name(f"{path.stem}_errors{path.suffix}"))
    if isinstance(output, DuckDBTableOutput):
        return DuckDBTableOutput(f"{output.table}_errors")
    if isinstance(output, DeltaOutput):
        path = output.path
        return DeltaOutput(path.with_name(f"{path.name}_errors"))
    raise TypeError(f"no errors table for {type(output).__name__}")


def swap_directory(new: Path, target: Path) -> None:
    """Put directory ``new`` at ``target`` atomically and delete what was there."""
    if not target.exists():
        os.rename(new, target)
        fsync_dir(target.parent)
        return
    if _exchange(new, target):
        fsync_dir(target.parent)
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old table
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    os.rename(new, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with ``renameat2``; False where that is unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")
