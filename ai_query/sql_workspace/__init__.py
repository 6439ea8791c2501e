"""The web UI's SQL editor engine (what a remote caller's SQL text runs on).

It lives at the top of the package because it joins two layers that serving may not import
(:mod:`ai_query.udf.duckdb`) with the server (``ai-query serve`` hands it to the HTTP app).
Each query gets a fresh in-memory DuckDB that sees only the caller's uploaded tables and the AI
functions, locked with DuckDB's own settings (:mod:`~ai_query.sql_workspace.locked`); uploads
are checked and converted once, per user, under quotas (:mod:`~ai_query.sql_workspace.storage`).
The local CLI and a user's own DuckDB do not pass through here: they are unrestricted.
"""

from __future__ import annotations

from ai_query.sql_workspace.limits import WorkspaceLimits
from ai_query.sql_workspace.workspace import DuckDBWorkspace

__all__ = ["DuckDBWorkspace", "WorkspaceLimits"]
