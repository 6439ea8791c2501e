"""The web UI: a static page at ``/`` and its assets under ``/ui/``, plus two small JSON routes.

The page is plain HTML and one vanilla JavaScript module shipped inside the package (no CDN, no
build step). It signs in with a bearer token kept in the browser's ``sessionStorage`` and calls
the same REST API as every other client (``/api/2.0/serving-endpoints``, the permissions API,
``/serving-endpoints/{name}/invocations``, ``/v1/chat/completions``), so what a user sees and
may do, and every validation message, are the API's own. The page itself carries no data, so
serving it needs no token; the JSON routes here do:

- ``GET /api/ui/me``: who the token belongs to and what it may create;
- ``GET /api/ui/metrics/{name}``: an endpoint's running totals for its charts (``CAN_VIEW``);
- ``GET /api/ui/jobs``: the jobs directory's job files and runs, when one is configured (admins
  and group ``jobs``);
- ``/api/ui/sql/*``: the SQL editor (:mod:`~ai_query.serving.http.sql_routes`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ai_query.serving.http import sql_routes
from ai_query.serving.http.context import Caller, Ctx
from ai_query.serving.http.problems import APIError
from ai_query.serving.http.sql_sessions import SQLWorkspace
from ai_query.serving.permissions import Identity, PermissionLevel

#: The page's files, inside the package.
UI_DIR = Path(str(files("ai_query.serving.http") / "ui"))

router = APIRouter(tags=["ui"])


@dataclass(frozen=True, kw_only=True)
class UIServices:
    """What the UI's SQL editor and Jobs page run on, given by the launcher (``ai-query serve``),
    since serving may import neither the DuckDB layer nor the jobs package."""

    sql_workspace: Callable[[str], SQLWorkspace] | None = None
    """Builds the SQL editor's workspace from the server's Flight address (None: no editor)."""
    job_runs: Callable[[], list[dict[str, Any]]] | None = None
    """The jobs directory's job files and their newest runs (None: no Jobs page)."""


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The single page (it asks for a token and calls the API itself)."""
    return FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-store"})


@router.get("/api/ui/me")
async def me(caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """The signed-in principal, its groups, and whether it may create endpoints."""
    return {
        "name": caller.name,
        "auth": any(a.enabled for a in ctx.auth),  # False: every caller is the local admin
        "groups": sorted(caller.groups),
        "is_admin": caller.is_admin,
        "may_create": caller.may_create,
        "secret_scopes": sorted(caller.secret_scopes),
        "sql_editor": ctx.sql is not None,
        "jobs": ctx.job_runs is not None and may_see_jobs(caller),
    }


@router.get("/api/ui/metrics/{name}")
async def endpoint_metrics(name: str, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Running totals of an endpoint's requests, tokens and latency (``CAN_VIEW``)."""
    record = ctx.serving.authorize(caller, name, PermissionLevel.CAN_VIEW)
    return ctx.metrics.summary(record.name)


#: Members may see the Jobs page (as may admins, and the local user when auth is off).
JOBS_GROUP = "jobs"


def may_see_jobs(caller: Identity) -> bool:
    """Whether ``caller`` may see the jobs directory's files and runs: admins and members of
    :data:`JOBS_GROUP` (a job's runs are its owner's business, not every token holder's)."""
    return caller.is_admin or JOBS_GROUP in caller.groups


@router.get("/api/ui/jobs")
async def jobs(caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """The job files of the server's jobs directory and their runs, as
    :func:`~ai_query.jobs.directory.directory_runs` shows them (:func:`may_see_jobs`)."""
    if ctx.job_runs is None:
        raise APIError(404, "no jobs directory is configured (ai-query serve --jobs-dir DIR)")
    if not may_see_jobs(caller):
        raise APIError(
            403,
            f"{caller.name} may not see the Jobs page: it is for admins and "
            f"members of group `{JOBS_GROUP}`",
        )
    return {"jobs": await asyncio.to_thread(ctx.job_runs)}


def add_ui(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets at ``/ui/``."""
    app.include_router(router)
    app.include_router(sql_routes.router)
    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
