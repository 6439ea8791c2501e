"""Each user's uploaded tables: checked and converted once, at upload, into a DuckDB file.

A user's folder is named by the SHA-256 of the principal (injective: ``alice@x.com`` and
``alice_x.com``, ``.`` and ``..`` each get their own). An upload is refused, with the reason,
when DuckDB cannot read it, when it has more columns than :attr:`WorkspaceLimits.max_columns`,
or when it would break the user's quotas (tables, bytes). What is kept is one DuckDB database
file per table (table ``t``), which a query attaches read-only: nothing is parsed again per
query, and a query cannot write into it.

The files live under ``<tmp>/ai-query-sql-<uid>/<pid>-<start>/`` for the server's life; a
folder whose server is gone (even after kill -9) is removed when the next server starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from ai_query.errors import UploadRejectedError
from ai_query.sql.vector_search import INDEX_REGISTRY
from ai_query.sql_workspace.limits import WorkspaceLimits
from ai_query.text import one_line

#: Table names: a plain SQL identifier (``fullmatch``: no trailing newline slips through).
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: The upload formats.
FORMATS = ("csv", "parquet")
_MANIFEST = "tables.json"
#: The table inside each stored file.
STORED_TABLE = "t"


@dataclass(frozen=True)
class StoredTable:
    """One uploaded table, as the page lists it."""

    name: str
    """Its SQL name."""
    format: str
    """What was uploaded: csv or parquet."""
    bytes: int
    """The uploaded file's size."""
    rows: int
    """Rows."""
    columns: int
    """Columns."""
    file: str
    """The stored DuckDB file, inside the user's folder."""
    vector_index: str | None = None
    """The vector index built over it at upload (``vector_search(index => ...)``), if any."""

    def to_data(self) -> dict[str, Any]:
        """As JSON data for the page (no file path)."""
        data = asdict(self)
        data.pop("file")
        return data


class UploadStore:
    """Every user's uploaded tables on this server; thread-safe.

    Args:
        limits: quotas and the size of one file.
        parent: where servers keep their folders (default: the temp dir, per OS user).
    """

    def __init__(self, limits: WorkspaceLimits, parent: Path | None = None) -> None:
        self.limits = limits
        parent = parent or Path(tempfile.gettempdir()) / f"ai-query-sql-{os.getuid()}"
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sweep_abandoned(parent)
        self.root = parent / _owner_tag(os.getpid())
        """This server's folder (removed by :meth:`close`)."""
        self.root.mkdir(mode=0o700, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def folder(self, principal: str) -> Path:
        """The principal's own folder (made on first use)."""
        folder = self.root / hashlib.sha256(principal.encode()).hexdigest()
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def tables(self, principal: str) -> list[StoredTable]:
        """The principal's tables, by name."""
        return sorted(self._manifest(self.folder(principal)).values(), key=lambda t: t.name)

    def paths(self, principal: str) -> dict[str, Path]:
        """The principal's tables: name -> stored DuckDB file."""
        folder = self.folder(principal)
        return {t.name: folder / t.file for t in self.tables(principal)}

    def save(
        self,
        principal: str,
        name: str,
        fmt: str,
        data: bytes,
        *,
        vector_index: str | None = None,
        build_index: Callable[[Path], None] | None = None,
    ) -> StoredTable:
        """Check, convert and keep an uploaded table (replacing one of the same name).

        Args:
            principal: whose table it is.
            name: its SQL name.
            fmt: csv or parquet.
            data: the file.
            vector_index: the name of a vector index to build over it (with ``build_index``).
            build_index: builds that index into the converted DuckDB file, before the table
                is kept (if it raises, nothing is kept).

        Raises:
            UploadRejectedError: a bad name or format, a file DuckDB cannot read, too many
                columns, or a quota the upload would break (the message says which).
        """
        check_table_name(name)
        if vector_index is not None:
            check_table_name(vector_index)
        if fmt not in FORMATS:
            raise UploadRejectedError(f"format must be csv or parquet, not {fmt!r}")
        limits = self.limits
        if len(data) > limits.max_upload_bytes:
            raise UploadRejectedError(
                f"a table file may have at most {limits.max_upload_bytes} bytes; "
                f"this one has {len(data)}"
            )
        folder = self.folder(principal)
        with self._user_lock(folder):
            manifest = self._manifest(folder)
            others = {k: t for k, t in manifest.items() if k != name.lower()}
            _check_names_free(others, name, vector_index)
            if len(others) >= limits.max_tables:
                raise UploadRejectedError(
                    f"you have {len(others)} tables, the most a user may keep: delete one first"
                )
            used = sum(t.bytes for t in others.values())
            if used + len(data) > limits.max_user_bytes:
                raise UploadRejectedError(
                    f"your tables would take {used + len(data)} bytes; a user may keep at most "
                    f"{limits.max_user_bytes}: delete a table first"
                )
            table = _convert(folder, name, fmt, data, limits)
            if build_index is not None and vector_index is not None:
                try:
                    build_index(folder / table.file)
                except BaseException:
                    (folder / table.file).unlink(missing_ok=True)
                    raise
                finally:
                    Path(f"{folder / table.file}.wal").unlink(missing_ok=True)
                table = replace(table, vector_index=vector_index)
            old = manifest.get(name.lower())
            manifest = {**others, name.lower(): table}
            _write_manifest(folder, manifest)
            if old is not None and old.file != table.file:
                (folder / old.file).unlink(missing_ok=True)
            return table

    def delete(self, principal: str, name: str) -> None:
        """Remove one of the principal's tables.

        Raises:
            UploadRejectedError: there is no such table.
        """
        folder = self.folder(principal)
        with self._user_lock(folder):
            manifest = self._manifest(folder)
            table = manifest.pop(name.lower(), None)
            if table is None:
                raise UploadRejectedError(f"you have no table named {name!r}")
            _write_manifest(folder, manifest)
            (folder / table.file).unlink(missing_ok=True)

    def close(self) -> None:
        """Remove this server's folder."""
        shutil.rmtree(self.root, ignore_errors=True)

    @contextmanager
    def _user_lock(self, folder: Path) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(folder.name, threading.Lock())
        with lock:
            yield

    @staticmethod
    def _manifest(folder: Path) -> dict[str, StoredTable]:
        path = folder / _MANIFEST
        if not path.exists():
            return {}
        return {k: StoredTable(**v) for k, v in json.loads(path.read_text()).items()}


def check_table_name(name: str) -> None:
    """Raise :class:`UploadRejectedError` unless ``name`` is a plain SQL identifier."""
    if not TABLE_NAME.fullmatch(name):
        raise UploadRejectedError(
            f"table name {name!r} must be a letter or _ then letters, digits and _ "
            "(at most 63 characters)"
        )


def _check_names_free(
    others: dict[str, StoredTable], name: str, vector_index: str | None
) -> None:
    """Raise unless the table's and its index's names are free among the user's other
    tables and their indexes (one namespace: each is a view of the query's database)."""
    taken = {t.name.lower() for t in others.values()} | {
        t.vector_index.lower() for t in others.values() if t.vector_index
    }
    for wanted in (name, vector_index):
        if wanted is not None and wanted.lower() in (*taken, INDEX_REGISTRY):
            raise UploadRejectedError(
                f"the name {wanted!r} is taken by another of your tables or vector indexes"
            )
    if vector_index is not None and vector_index.lower() == name.lower():
        raise UploadRejectedError("a vector index needs a name of its own, not its table's")


def _convert(
    folder: Path, name: str, fmt: str, data: bytes, limits: WorkspaceLimits
) -> StoredTable:
    """Read the upload once with DuckDB into a new database file; refuse what does not load."""
    stamp = uuid.uuid4().hex[:12]
    incoming = folder / f".incoming-{stamp}.{fmt}"
    target = folder / f"{name.lower()}-{stamp}.duckdb"
    incoming.write_bytes(data)
    try:
        columns = _column_count(incoming, fmt)
        if columns > limits.max_columns:
            raise UploadRejectedError(
                f"the file has {columns} columns; a table may have at most {limits.max_columns}"
            )
        reader = "read_parquet" if fmt == "parquet" else "read_csv_auto"
        con = duckdb.connect(str(target), config={
            "memory_limit": f"{limits.memory_mb}MB", "threads": 1,
            "autoinstall_known_extensions": False, "autoload_known_extensions": False})
        try:
            con.execute(
                f"CREATE TABLE {STORED_TABLE} AS SELECT * FROM {reader}(?)", [str(incoming)]
            )
            found = con.execute(
                f"SELECT (SELECT count(*) FROM {STORED_TABLE}), (SELECT count(*) FROM "
                f"duckdb_columns() WHERE table_name = '{STORED_TABLE}')"
            ).fetchall()[0]
        finally:
            con.close()
        rows, columns = int(found[0]), int(found[1])
        if columns > limits.max_columns:
            raise UploadRejectedError(
                f"the file has {columns} columns; a table may have at most {limits.max_columns}"
            )
    except duckdb.Error as exc:
        target.unlink(missing_ok=True)
        raise UploadRejectedError(
            f"DuckDB cannot read this {fmt.upper()} file: {one_line(str(exc))[:300]}"
        ) from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        incoming.unlink(missing_ok=True)
        Path(f"{target}.wal").unlink(missing_ok=True)
    return StoredTable(name=name, format=fmt, bytes=len(data), rows=rows, columns=columns,
                       file=target.name)


def _column_count(path: Path, fmt: str) -> int:
    """Columns of the upload, found cheaply before DuckDB parses it (a 100k-column CSV takes
    DuckDB seconds and gigabytes to read)."""
    if fmt == "parquet":
        try:
            return int(pq.read_metadata(path).num_columns)
        except Exception as exc:
            raise UploadRejectedError(
                f"this is not a Parquet file DuckDB can read: {one_line(str(exc))[:300]}"
            ) from exc
    with path.open("rb") as f:
        head = f.readline(4 * 1024 * 1024)
    return 1 + max(head.count(sep) for sep in (b",", b";", b"\t", b"|"))


def _write_manifest(folder: Path, manifest: dict[str, StoredTable]) -> None:
    tmp = folder / f".{_MANIFEST}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({k: asdict(t) for k, t in manifest.items()}))
    tmp.replace(folder / _MANIFEST)


def _owner_tag(pid: int) -> str:
    """``<pid>-<start>``: the process and when it started (a reused PID gets another tag)."""
    return f"{pid}-{_start_time(pid)}"


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    return stat.rsplit(")", 1)[1].split()[19]


def sweep_abandoned(parent: Path) -> None:
    """Remove the folders of servers that are gone (killed before they could clean up)."""
    for folder in parent.iterdir():
        pid_text, _, _ = folder.name.partition("-")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if _alive(pid) and _owner_tag(pid) == folder.name:
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
