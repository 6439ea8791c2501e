"""The bounds of the SQL editor's workspace: what one query may use, what one user may store."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class WorkspaceLimits:
    """Bounds of the web SQL editor (see :mod:`ai_query.sql_workspace`)."""

    memory_mb: int = 512
    """DuckDB memory per query (``memory_limit``)."""
    threads: int = 1
    """DuckDB threads per query."""
    temp_mb: int = 256
    """Spill space per query (``max_temp_directory_size``), in a folder removed after it."""
    timeout_s: float = 120.0
    """Wall time per query; past it the query is interrupted."""
    max_result_rows: int = 100_000
    """Most rows of a result (the page shows 1,000; the download has them all)."""
    max_result_bytes: int = 64 * 1024 * 1024
    """Most bytes of a result, in Arrow memory."""
    max_concurrent_queries: int = 2
    """Editor queries running at once on the server (others wait, within their time)."""
    max_tables: int = 20
    """Uploaded tables per user."""
    max_upload_bytes: int = 8 * 1024 * 1024
    """Largest uploaded file."""
    max_user_bytes: int = 64 * 1024 * 1024
    """Uploaded bytes per user, all tables together."""
    max_columns: int = 1_000
    """Most columns of an uploaded table."""
    max_index_rows: int = 20_000
    """Most rows of an uploaded table a vector index is built over (each is embedded)."""
