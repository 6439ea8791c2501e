"""The UI's SQL editor: ``/api/ui/sql/*`` (tables uploaded as CSV/Parquet, queries, downloads).

Serving runs no SQL itself (it may not import the DuckDB layer): the app is given a
:class:`SQLWorkspace` by whoever launches it (``ai-query serve`` passes
:class:`ai_query.sql_workspace.DuckDBWorkspace`), and without one these routes answer 404. A
query's ``ai_query(...)`` calls reach the models through the server's own Flight engine with the
caller's token, so Flight checks ``CAN_QUERY`` and rate limits per endpoint; the editor itself
is open to principals who may query at least one endpoint. Each principal has its own tables
(bounded in size) and its last result, kept in memory for download.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from ai_query.redaction import redact
from ai_query.serving.http.context import Caller, Ctx, ServerContext
from ai_query.serving.http.problems import APIError, bad_request
from ai_query.serving.http.schemas import read_json
from ai_query.serving.permissions import Identity, PermissionLevel

#: Largest uploaded table file.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
#: Most rows of a result sent to the page (the download has them all).
MAX_SHOWN_ROWS = 1000
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_FORMATS = ("csv", "parquet")

router = APIRouter(prefix="/api/ui/sql", tags=["ui"])


class SQLWorkspace(Protocol):
    """Runs the SQL editor's queries (see :class:`ai_query.sql_workspace.DuckDBWorkspace`)."""

    def run(
        self,
        sql: str,
        tables: Mapping[str, Path],
        token: str | None,
        progress: Callable[[int], None],
    ) -> pa.Table:
        """Run ``sql`` over ``tables`` (name -> CSV/Parquet file); report rows answered."""
        ...


class SQLSessions:
    """Each principal's uploaded tables and last result."""

    def __init__(self, workspace: SQLWorkspace) -> None:
        self.workspace = workspace
        """Runs the queries."""
        self.root = Path(tempfile.mkdtemp(prefix="ai-query-sql-"))
        """Where uploaded tables are kept (removed by :meth:`close`)."""
        self.results: dict[str, pa.Table] = {}
        """Each principal's last result."""
        self._lock = threading.Lock()

    def tables(self, principal: str) -> dict[str, Path]:
        """The principal's tables: name -> file."""
        folder = self._folder(principal)
        return {p.name.rsplit(".", 1)[0]: p for p in sorted(folder.iterdir())}

    def _folder(self, principal: str) -> Path:
        folder = self.root / re.sub(r"[^A-Za-z0-9_.-]", "_", principal)
        folder.mkdir(exist_ok=True)
        return folder

    def save(self, principal: str, name: str, fmt: str, data: bytes) -> None:
        """Keep an uploaded table (replacing one of the same name)."""
        for old in self._folder(principal).glob(f"{name}.*"):
            old.unlink()
        (self._folder(principal) / f"{name}.{fmt}").write_bytes(data)

    def close(self) -> None:
        """Remove the uploaded tables."""
        shutil.rmtree(self.root, ignore_errors=True)


def require_query_rights(ctx: ServerContext, caller: Identity) -> None:
    """Raise 403 unless ``caller`` may query at least one endpoint."""
    if not any(
        (level := ctx.serving.level(caller, r)) is not None
        and level.covers(PermissionLevel.CAN_QUERY)
        for r in ctx.serving.records()
    ):
        raise APIError(403, f"{caller.name} may query no endpoint, so may not use this page")


def _sessions(ctx: ServerContext, caller: Identity) -> SQLSessions:
    sessions = ctx.sql
    if sessions is None:
        raise APIError(404, "the SQL editor is not enabled on this server")
    require_query_rights(ctx, caller)
    return sessions


@router.get("/tables")
async def list_tables(caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """The caller's uploaded tables."""
    sessions = _sessions(ctx, caller)
    return {"tables": [{"name": n, "format": p.suffix[1:], "bytes": p.stat().st_size}
                       for n, p in sessions.tables(caller.name).items()]}


@router.post("/tables/{name}")
async def upload_table(name: str, request: Request, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Upload a table: ``{"format": "csv" | "parquet", "data_base64": "..."}`` (JSON, as every
    body the server takes; see :mod:`~ai_query.serving.http.guard`)."""
    sessions = _sessions(ctx, caller)
    body = await read_json(request)
    fmt = body.get("format", "csv") if isinstance(body, dict) else None
    if fmt not in _FORMATS:
        raise bad_request(f"format must be csv or parquet, not {fmt!r}")
    if not _TABLE_NAME.match(name):
        raise bad_request(f"table name {name!r} must be letters, digits and _ (a SQL name)")
    try:
        data = base64.b64decode(body.get("data_base64", ""), validate=True)
    except (binascii.Error, TypeError) as exc:
        raise bad_request("data_base64 must be the file's bytes in base64") from exc
    if len(data) > MAX_UPLOAD_BYTES:
        raise APIError(413, f"a table file may have at most {MAX_UPLOAD_BYTES} bytes")
    sessions.save(caller.name, name, fmt, data)
    return await list_tables(caller, ctx)


@router.post("/query")
async def run_query(request: Request, caller: Caller, ctx: Ctx) -> StreamingResponse:
    """Run a query; answers NDJSON: ``{"rows_answered": n}`` lines while ``ai_query`` rows are
    answered, then ``{"columns", "rows", "row_count"}`` or ``{"error"}``."""
    sessions = _sessions(ctx, caller)
    body = await read_json(request)
    sql = body.get("sql") if isinstance(body, dict) else None
    if not isinstance(sql, str) or not sql.strip():
        raise bad_request("the body must be {\"sql\": \"...\"}")
    header = request.headers.get("authorization", "")
    token = header.split(" ", 1)[1].strip() if header.lower().startswith("bearer ") else None
    tables = sessions.tables(caller.name)
    answered = [0]

    async def lines() -> AsyncIterator[bytes]:
        task = asyncio.create_task(asyncio.to_thread(
            sessions.workspace.run, sql, tables, token,
            lambda n: answered.__setitem__(0, answered[0] + n)))
        last = -1
        while not task.done():
            if answered[0] != last:
                last = answered[0]
                yield _line({"rows_answered": last})
            await asyncio.sleep(0.2)
        try:
            table = task.result()
        except Exception as exc:  # noqa: BLE001 - DuckDB's own errors too: shown in the page
            yield _line({"error": redact(str(exc))})
            return
        sessions.results[caller.name] = table
        shown = table.slice(0, MAX_SHOWN_ROWS).to_pylist()
        yield _line({"rows_answered": answered[0], "columns": table.column_names,
                     "rows": [[_cell(row[c]) for c in table.column_names] for row in shown],
                     "row_count": table.num_rows})

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/result.{fmt}")
async def download(fmt: str, caller: Caller, ctx: Ctx) -> Response:
    """The caller's last result as CSV or Parquet."""
    sessions = _sessions(ctx, caller)
    table = sessions.results.get(caller.name)
    if table is None:
        raise APIError(404, "no result yet: run a query first")
    out = io.BytesIO()
    if fmt == "csv":
        pa_csv.write_csv(table, out)
        media = "text/csv"
    elif fmt == "parquet":
        pq.write_table(table, out)
        media = "application/vnd.apache.parquet"
    else:
        raise APIError(404, f"no result format {fmt!r}: csv or parquet")
    return Response(out.getvalue(), media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="result.{fmt}"'})


def _line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, default=str) + "\n").encode()


def _cell(value: Any) -> Any:
    """A result cell as JSON (structs and lists as they are, other types as text)."""
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return str(value)
