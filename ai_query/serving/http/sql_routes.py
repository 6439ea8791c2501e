"""The UI's SQL editor: ``/api/ui/sql/*`` (tables uploaded as CSV/Parquet, queries, downloads).

Serving runs no SQL itself (it may not import the DuckDB layer): the app is given a
:class:`SQLWorkspace` by whoever launches it (``ai-query serve`` passes
:class:`ai_query.sql_workspace.DuckDBWorkspace`), and without one these routes answer 404. The
workspace keeps each principal's uploads (checked at upload, under quotas) and runs each query
in a locked DuckDB that sees only them; a query's ``ai_query(...)`` calls reach the models
through the server's own Flight engine with the caller's token, so Flight checks ``CAN_QUERY``
and rate limits per endpoint. The editor is open to principals who may query at least one
endpoint. Each principal's last result is kept in memory for download.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from ai_query.errors import AIQueryError
from ai_query.redaction import redact
from ai_query.serving.http.context import Caller, Ctx, ServerContext
from ai_query.serving.http.problems import APIError, bad_request, internal_error
from ai_query.serving.http.schemas import read_json
from ai_query.serving.http.sql_sessions import SQLSessions
from ai_query.serving.permissions import Identity, PermissionLevel

#: Most rows of a result sent to the page (the download has them all).
MAX_SHOWN_ROWS = 1000

router = APIRouter(prefix="/api/ui/sql", tags=["ui"])


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
    return {"tables": sessions.workspace.tables(caller.name)}


@router.post("/tables/{name}")
async def upload_table(name: str, request: Request, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Upload a table: ``{"format": "csv" | "parquet", "data_base64": "..."}`` (JSON, as every
    body the server takes; see :mod:`~ai_query.serving.http.guard`), and optionally
    ``"vector_index": {"name", "key", "text", "endpoint"}`` to build an index that
    ``vector_search(index => name, ...)`` searches. It is read once, here: a file that does not
    load, one over a quota, or an index that cannot be built is refused with the reason."""
    sessions = _sessions(ctx, caller)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request('the body must be {"format": "csv" | "parquet", "data_base64": "..."}')
    try:
        data = base64.b64decode(body.get("data_base64", ""), validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise bad_request("data_base64 must be the file's bytes in base64") from exc
    limit = sessions.workspace.max_upload_bytes
    if len(data) > limit:
        raise APIError(
            413, f"a table file may have at most {limit} bytes; this one has {len(data)}"
        )
    tables = await asyncio.to_thread(
        sessions.workspace.upload, caller.name, name, body.get("format", "csv"), data,
        vector_index=body.get("vector_index"), token=_bearer(request))
    return {"tables": tables}


@router.delete("/tables/{name}")
async def delete_table(name: str, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Remove one of the caller's tables."""
    sessions = _sessions(ctx, caller)
    return {"tables": await asyncio.to_thread(sessions.workspace.delete, caller.name, name)}


@router.post("/query")
async def run_query(request: Request, caller: Caller, ctx: Ctx) -> StreamingResponse:
    """Run a query; answers NDJSON: ``{"rows_answered": n}`` lines while ``ai_query`` rows are
    answered, then ``{"columns", "rows", "row_count"}`` or ``{"error"}``."""
    sessions = _sessions(ctx, caller)
    body = await read_json(request)
    sql = body.get("sql") if isinstance(body, dict) else None
    if not isinstance(sql, str) or not sql.strip():
        raise bad_request("the body must be {\"sql\": \"...\"}")
    token = _bearer(request)
    answered = [0]

    async def lines() -> AsyncIterator[bytes]:
        task = asyncio.create_task(asyncio.to_thread(
            sessions.workspace.run, caller.name, sql, token,
            lambda n: answered.__setitem__(0, answered[0] + n)))
        last = -1
        while not task.done():
            if answered[0] != last:
                last = answered[0]
                yield _line({"rows_answered": last})
            await asyncio.sleep(0.2)
        try:
            table = task.result()
        except AIQueryError as exc:  # the query's own error, or a bound it hit: for the page
            yield _line({"error": redact(str(exc))})
            return
        except Exception as exc:  # noqa: BLE001 - a bug: logged, the page gets its request id
            yield _line({"error": internal_error(exc).message})
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


def _bearer(request: Request) -> str | None:
    """The caller's bearer token (sent on with the workspace's engine calls)."""
    header = request.headers.get("authorization", "")
    return header.split(" ", 1)[1].strip() if header.lower().startswith("bearer ") else None


def _line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, default=str) + "\n").encode()


def _cell(value: Any) -> Any:
    """A result cell as JSON (structs and lists as they are, other types as text)."""
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return str(value)
