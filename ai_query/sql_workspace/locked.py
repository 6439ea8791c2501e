"""A locked DuckDB: the caller's tables attached read-only, then no file, extension or setting
reachable from SQL, and every query bounded in memory, threads, spill space, time and result.

The lock is DuckDB's own (its "Securing DuckDB" settings), set after the tables are attached
and ``ai_query`` is registered: ``enable_external_access = false`` (no ``read_*`` of a path, no
``glob``, ``COPY``, ``EXPORT``, ``ATTACH``, ``INSTALL``/``LOAD``), extension auto-install and
auto-load off, then ``lock_configuration = true`` so that no ``SET`` undoes any of it. Which
statements run is read from DuckDB's own parser, not from the text: queries (``SELECT``,
``WITH``, ``DESCRIBE``...), ``EXPLAIN``, and ``CREATE TABLE``/``CREATE VIEW`` in the query's own
in-memory database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from ai_query.errors import QueryLimitError, SQLParseError, StatementNotAllowedError
from ai_query.sql.vector_search import INDEX_REGISTRY
from ai_query.sql_workspace.limits import WorkspaceLimits
from ai_query.sql_workspace.storage import STORED_TABLE
from ai_query.text import one_line
from ai_query.udf.vector_index import REGISTRY_COLUMNS

#: What the editor runs, for error messages.
ALLOWED = ("queries (SELECT, WITH, DESCRIBE, SUMMARIZE), EXPLAIN, and CREATE TABLE / CREATE VIEW "
           "in the query's own database")
_CREATE_KINDS = ("TABLE", "VIEW")


def open_workspace(tables: Mapping[str, Path]) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB with ``tables`` (name -> stored file) as read-only views, and
    the vector indexes built into those files as views that ``vector_search`` finds."""
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False})
    indexes: list[tuple[Any, ...]] = []
    for i, (name, path) in enumerate(tables.items()):
        alias = f"__upload_{i}"
        con.execute(f"ATTACH '{_quoted(str(path))}' AS {alias} (READ_ONLY)")
        con.execute(f"CREATE VIEW {_ident(name)} AS SELECT * FROM {alias}.main.{STORED_TABLE}")
        indexes += _attach_indexes(con, alias, name)
    if indexes:
        con.execute(f"CREATE TABLE {INDEX_REGISTRY} ({REGISTRY_COLUMNS})")
        con.executemany(f"INSERT INTO {INDEX_REGISTRY} VALUES (?, ?, ?, ?, ?, ?)", indexes)
    return con


def _attach_indexes(
    con: duckdb.DuckDBPyConnection, alias: str, table: str
) -> list[tuple[Any, ...]]:
    """Views of the indexes in the attached file ``alias``; their registry rows, whose source
    is the upload's name."""
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
        [alias, INDEX_REGISTRY],
    ).fetchall()[0][0]
    if not found:
        return []
    rows = con.execute(
        f"SELECT name, primary_key, text_column, endpoint, dims FROM {alias}.main.{INDEX_REGISTRY}"
    ).fetchall()
    for index, *_ in rows:
        con.execute(f"CREATE VIEW {_ident(index)} AS SELECT * FROM {alias}.main.{_ident(index)}")
    return [(index, table, key, text, endpoint, dims) for index, key, text, endpoint, dims in rows]


def lock(con: duckdb.DuckDBPyConnection, limits: WorkspaceLimits, temp_dir: Path) -> None:
    """Bound ``con`` and shut it off from the file system, extensions and its settings."""
    for setting, value in (
        ("memory_limit", f"{limits.memory_mb}MB"),
        ("threads", limits.threads),
        ("temp_directory", str(temp_dir)),
        ("max_temp_directory_size", f"{limits.temp_mb}MB"),
        ("autoinstall_known_extensions", False),
        ("autoload_known_extensions", False),
        ("enable_external_access", False),
        ("lock_configuration", True),
    ):
        con.execute(f"SET {setting} = {_literal(value)}")


def check_statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The statements of ``sql``, each of a kind the editor runs.

    Raises:
        SQLParseError: DuckDB cannot parse it.
        StatementNotAllowedError: a statement of another kind (the message says which).
    """
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise SQLParseError(one_line(exc)) from exc
    if not statements:
        raise StatementNotAllowedError("there is no statement to run")
    out = []
    for number, statement in enumerate(statements, 1):
        kind = statement.type
        if kind is duckdb.StatementType.CREATE:
            created = _created_kind(statement.query)
            if created not in _CREATE_KINDS:
                raise StatementNotAllowedError(
                    f"statement {number} is CREATE {created or '...'}; the SQL editor runs only "
                    f"{ALLOWED}"
                )
        elif kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            word = (statement.query.split() or [kind.name])[0].upper()
            raise StatementNotAllowedError(
                f"statement {number} is {word}; the SQL editor runs only {ALLOWED}"
            )
        out.append(statement.query)
    return out


def fetch_bounded(relation: Any, limits: WorkspaceLimits) -> pa.Table:
    """The rows of ``relation``, read batch by batch, stopping at the result bounds.

    Raises:
        QueryLimitError: more rows or bytes than the limits allow.
    """
    reader = relation.fetch_record_batch(10_000)
    batches: list[pa.RecordBatch] = []
    rows = size = 0
    for batch in reader:
        rows += batch.num_rows
        size += batch.nbytes
        if rows > limits.max_result_rows:
            raise QueryLimitError(
                f"the result has more than {limits.max_result_rows} rows, the SQL editor's "
                "limit: add a LIMIT or aggregate"
            )
        if size > limits.max_result_bytes:
            raise QueryLimitError(
                f"the result is larger than {limits.max_result_bytes} bytes, the SQL editor's "
                "limit: select fewer columns or rows"
            )
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


@contextmanager
def deadline(con: duckdb.DuckDBPyConnection, seconds: float) -> Iterator[Callable[[], bool]]:
    """Interrupt ``con``'s query after ``seconds``; yields whether time ran out."""
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield fired.is_set
    finally:
        timer.cancel()


def limit_error(exc: duckdb.Error, limits: WorkspaceLimits, timed_out: bool) -> Exception:
    """The workspace's own error where a DuckDB error is a bound that was hit, else ``exc``."""
    if timed_out:
        return QueryLimitError(
            f"the query ran past the SQL editor's time limit of {limits.timeout_s:g} s and was "
            "stopped"
        )
    if isinstance(exc, duckdb.OutOfMemoryException):
        return QueryLimitError(
            f"the query needs more than the SQL editor's {limits.memory_mb} MB of memory and "
            f"{limits.temp_mb} MB of spill space: " + one_line(exc)[:300]
        )
    return exc


def _created_kind(query: str) -> str | None:
    try:
        tree = sqlglot.parse_one(query, read="duckdb")
    except sqlglot.errors.ParseError:
        return None
    if isinstance(tree, exp.Create):
        return str(tree.args.get("kind") or "").upper() or None
    return None


def _ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql("duckdb")


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return f"'{_quoted(str(value))}'"
