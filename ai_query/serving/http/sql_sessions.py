"""What the SQL editor's routes are given: a :class:`SQLWorkspace` (uploads and queries) and each
principal's last result (:class:`SQLSessions`), held by the server's context."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import pyarrow as pa


class SQLWorkspace(Protocol):
    """Keeps uploads and runs the SQL editor's queries (see
    :class:`ai_query.sql_workspace.DuckDBWorkspace`); tables are listed as JSON data
    (``name``, ``format``, ``bytes``, ``rows``, ``columns``)."""

    max_upload_bytes: int
    """Largest table file it takes."""

    def tables(self, principal: str) -> list[dict[str, Any]]:
        """The principal's tables."""
        ...

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
        """Check and keep a table (and build the vector index it asks for, embedded with the
        caller's ``token``); the principal's tables after it."""
        ...

    def delete(self, principal: str, name: str) -> list[dict[str, Any]]:
        """Remove a table; the principal's tables after it."""
        ...

    def run(
        self, principal: str, sql: str, token: str | None, progress: Callable[[int], None]
    ) -> pa.Table:
        """Run ``sql`` over the principal's tables; report rows answered by AI calls."""
        ...

    def close(self) -> None:
        """Remove every upload."""
        ...


class SQLSessions:
    """The workspace, and each principal's last result."""

    def __init__(self, workspace: SQLWorkspace) -> None:
        self.workspace = workspace
        """Keeps uploads, runs the queries."""
        self.results: dict[str, pa.Table] = {}
        """Each principal's last result."""

    def close(self) -> None:
        """Remove the uploaded tables."""
        self.workspace.close()
