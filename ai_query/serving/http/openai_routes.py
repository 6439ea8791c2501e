"""The OpenAI-compatible API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``
and ``/v1/models``. ``model`` is the endpoint name (or a Databricks alias)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ai_query.serving.http.context import Caller, Ctx, ServerContext
from ai_query.serving.http.invoke import invoke
from ai_query.serving.http.problems import bad_request
from ai_query.serving.http.schemas import read_json
from ai_query.serving.permissions import Identity, PermissionLevel

router = APIRouter(prefix="/v1", tags=["openai"])


async def _route(request: Request, route: str, caller: Identity, ctx: ServerContext) -> Response:
    body = await read_json(request)
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        raise bad_request("'model' (the endpoint name) is required")
    return await invoke(
        ctx,
        model,
        body,
        caller=caller,
        route=route,
        client_request_id=request.headers.get("x-client-request-id"),
    )


@router.post("/chat/completions")
async def chat_completions(
    request: Request,
    caller: Caller,
    ctx: Ctx,
) -> Response:
    """Chat with an endpoint (``stream``, ``response_format``, ``tools`` supported)."""
    return await _route(request, "chat", caller, ctx)


@router.post("/completions")
async def completions(
    request: Request,
    caller: Caller,
    ctx: Ctx,
) -> Response:
    """Complete prompts with an endpoint."""
    return await _route(request, "completions", caller, ctx)


@router.post("/embeddings")
async def embeddings(
    request: Request,
    caller: Caller,
    ctx: Ctx,
) -> Response:
    """Embed texts with an endpoint."""
    return await _route(request, "embeddings", caller, ctx)


def _model(name: str, task: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "ai_query", "task": task}


@router.get("/models")
async def list_models(caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Every endpoint and alias that the caller can view."""
    catalog = ctx.serving.catalog()
    records = {r.name: r for r in ctx.serving.records()}
    created = {name: r.creation_timestamp // 1000 for name, r in records.items()}

    def visible(name: str) -> bool:
        record = records.get(name)
        return record is not None and ctx.serving.level(caller, record) is not None

    data = [
        _model(e.name, e.task, created.get(e.name, 0))
        for e in catalog.endpoints()
        if visible(e.name)
    ]
    for alias, target in catalog.aliases().items():
        if visible(target):
            data.append(_model(alias, catalog.task_of(target), created.get(target, 0)))
    return {"object": "list", "data": data}


@router.get("/models/{name}")
async def get_model(name: str, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """One queryable endpoint or alias (``CAN_VIEW``)."""
    record = ctx.serving.authorize(caller, name, PermissionLevel.CAN_VIEW)
    endpoint = ctx.serving.endpoint(name)
    return _model(name, endpoint.task, record.creation_timestamp // 1000)
