"""The web UI: a static page at ``/`` and its assets under ``/ui/``, plus two small JSON routes.

The page is plain HTML and one vanilla JavaScript module shipped inside the package (no CDN, no
build step). It signs in with a bearer token kept in the browser's ``sessionStorage`` and calls
the same REST API as every other client (``/api/2.0/serving-endpoints``, the permissions API,
``/serving-endpoints/{name}/invocations``, ``/v1/chat/completions``), so what a user sees and
may do, and every validation message, are the API's own. The page itself carries no data, so
serving it needs no token; the JSON routes here do:

- ``GET /api/ui/me``: who the token belongs to and what it may create;
- ``GET /api/ui/metrics/{name}``: an endpoint's running totals for its charts (``CAN_VIEW``);
- ``/api/ui/sql/*``: the SQL editor (:mod:`~ai_query.serving.http.sql_routes`).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ai_query.serving.http import sql_routes
from ai_query.serving.http.context import Caller, Ctx
from ai_query.serving.permissions import PermissionLevel

#: The page's files, inside the package.
UI_DIR = Path(str(files("ai_query.serving.http") / "ui"))

router = APIRouter(tags=["ui"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The single page (it asks for a token and calls the API itself)."""
    return FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-store"})


@router.get("/api/ui/me")
async def me(caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """The signed-in principal, its groups, and whether it may create endpoints."""
    return {
        "name": caller.name,
        "groups": sorted(caller.groups),
        "is_admin": caller.is_admin,
        "may_create": caller.may_create,
        "secret_scopes": sorted(caller.secret_scopes),
        "sql_editor": ctx.sql is not None,
    }


@router.get("/api/ui/metrics/{name}")
async def endpoint_metrics(name: str, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Running totals of an endpoint's requests, tokens and latency (``CAN_VIEW``)."""
    record = ctx.serving.authorize(caller, name, PermissionLevel.CAN_VIEW)
    return ctx.metrics.summary(record.name)


def add_ui(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets at ``/ui/``."""
    app.include_router(router)
    app.include_router(sql_routes.router)
    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
