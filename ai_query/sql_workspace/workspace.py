"""The web SQL editor's engine: each query on a fresh, locked, in-memory DuckDB with the
caller's uploaded tables and ``ai_query`` ready, whose rows run on the serving server's own
engine through its Flight port with the caller's token (so Flight checks ``CAN_QUERY`` on each
endpoint, and its rate limits).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import duckdb
import pyarrow as pa

from ai_query.engine.flight.client import FlightEngineClient
from ai_query.errors import QueryLimitError, SQLError
from ai_query.sql_workspace.indexes import IndexRequest, build_index
from ai_query.sql_workspace.limits import WorkspaceLimits
from ai_query.sql_workspace.locked import (
    check_statements,
    deadline,
    fetch_bounded,
    limit_error,
    lock,
    open_workspace,
)
from ai_query.sql_workspace.storage import UploadStore
from ai_query.text import one_line
from ai_query.udf.duckdb import AIQueryConnection


class DuckDBWorkspace:
    """Uploads and queries of the SQL editor (what ``ai-query serve`` gives the HTTP app).

    Args:
        flight_url: the serving server's Flight address.
        limits: bounds of each query and quotas of each user.
    """

    def __init__(self, flight_url: str, limits: WorkspaceLimits | None = None) -> None:
        self.flight_url = flight_url
        """The serving server's Flight address."""
        self.limits = limits or WorkspaceLimits()
        """Bounds and quotas."""
        self.store = UploadStore(self.limits)
        """Every user's uploaded tables."""
        self._running = threading.BoundedSemaphore(self.limits.max_concurrent_queries)

    @property
    def max_upload_bytes(self) -> int:
        """Largest table file taken."""
        return self.limits.max_upload_bytes

    def tables(self, principal: str) -> list[dict[str, Any]]:
        """The principal's uploaded tables, as the page lists them."""
        return [t.to_data() for t in self.store.tables(principal)]

    def upload(
        self,
        principal: str,
        name: str,
        fmt: str,
        data: bytes,
        *,
        vector_index: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> list[dict[str, Any]]:
        """Check, convert and keep an uploaded table; the principal's tables after it.

        Args:
            principal: whose table it is.
            name: its SQL name.
            fmt: csv or parquet.
            data: the file.
            vector_index: ``{"name", "key", "text", "endpoint"}``: also build a vector index
                over it (see :func:`build_index`), embedded through the server's Flight
                engine with ``token``; the upload is kept only if the index is built.
            token: the caller's bearer token.

        Raises:
            UploadRejectedError: the file does not load, a quota would be broken, or the
                vector index cannot be built (the message says why).
        """
        if vector_index is None:
            self.store.save(principal, name, fmt, data)
            return self.tables(principal)
        request = IndexRequest.from_data(vector_index)
        self.store.save(
            principal, name, fmt, data, vector_index=request.name,
            build_index=lambda path: build_index(path, request, self.flight_url, token,
                                                 self.limits),
        )
        return self.tables(principal)

    def delete(self, principal: str, name: str) -> list[dict[str, Any]]:
        """Remove an uploaded table; the principal's tables after it."""
        self.store.delete(principal, name)
        return self.tables(principal)

    def run(
        self,
        principal: str,
        sql: str,
        token: str | None,
        progress: Callable[[int], None],
    ) -> pa.Table:
        """Run ``sql`` over the principal's tables; return the last statement's result.

        Args:
            principal: whose tables the query sees.
            sql: DuckDB SQL with ``ai_query(...)`` and the task functions.
            token: the caller's bearer token, sent with every batch to the Flight server.
            progress: called with the number of rows answered by AI calls after each chunk.

        Raises:
            StatementNotAllowedError: a statement the editor does not run.
            QueryLimitError: the query hit a bound (time, memory, result size) or the
                editor is busy.
            SQLError: the query's own error, as DuckDB says it (on one line).
        """
        limits = self.limits
        if not self._running.acquire(timeout=limits.timeout_s):
            raise QueryLimitError(
                f"the SQL editor is running {limits.max_concurrent_queries} queries, its most "
                "at once: try again in a moment"
            )
        temp_dir = self.store.root / f".tmp-{uuid.uuid4().hex[:12]}"
        engine = FlightEngineClient([self.flight_url], token=token or "")
        raw = open_workspace(self.store.paths(principal))
        try:
            statements = check_statements(raw, sql)
            con = AIQueryConnection(raw, engine.catalog, engine)
            con.progress.listeners.append(lambda rows, *_: progress(rows))
            lock(raw, limits, temp_dir)
            with deadline(raw, limits.timeout_s) as timed_out:
                try:
                    return _run_statements(con, statements, limits)
                except duckdb.Error as exc:
                    raise limit_error(exc, limits, timed_out()) from exc
        except duckdb.Error as exc:  # the query's own mistake: DuckDB's words for it
            raise SQLError(one_line(exc)) from exc
        finally:
            raw.close()
            engine.close()  # one client per query: its Flight connections go with it
            shutil.rmtree(temp_dir, ignore_errors=True)
            self._running.release()

    def close(self) -> None:
        """Remove every uploaded table."""
        self.store.close()


def _run_statements(
    con: AIQueryConnection, statements: list[str], limits: WorkspaceLimits
) -> pa.Table:
    """Run each statement; the last one's rows (an empty table when it returns none)."""
    for statement in statements[:-1]:
        con.execute(statement)
    relation = con.sql(statements[-1])
    if relation is None:  # a CREATE
        return pa.table({})
    with con.errors():  # a failed ai_query row: its own error, not DuckDB's wrapper
        return fetch_bounded(relation, limits)
