"""The OpenAI-compatible API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``
and ``/v1/models``. ``model`` is the endpoint name (or a Databricks alias)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ai_query.serving.http.context import Ctx, Principal, ServerContext
from ai_query.serving.http.invoke import invoke
from ai_query.serving.http.problems import bad_request
from ai_query.serving.http.schemas import read_json

router = APIRouter(prefix="/v1", tags=["openai"])


async def _route(request: Request, route: str, principal: str, ctx: ServerContext) -> Response:
    body = await read_json(request)
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        raise bad_request("'model' (the endpoint name) is required")
    return await invoke(
        ctx,
        model,
        body,
        principal=principal,
        route=route,
        client_request_id=request.headers.get("x-client-request-id"),
    )


@router.post("/chat/completions")
async def chat_completions(
    request: Request,
    principal: Principal,
    ctx: Ctx,
) -> Response:
    """Chat with an endpoint (``stream``, ``response_format``, ``tools`` supported)."""
    return await _route(request, "chat", principal, ctx)


@router.post("/completions")
async def completions(
    request: Request,
    principal: Principal,
    ctx: Ctx,
) -> Response:
    """Complete prompts with an endpoint."""
    return await _route(request, "completions", principal, ctx)


@router.post("/embeddings")
async def embeddings(
    request: Request,
    principal: Principal,
    ctx: Ctx,
) -> Response:
    """Embed texts with an endpoint."""
    return await _route(request, "embeddings", principal, ctx)


def _model(name: str, task: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "ai_query", "task": task}


@router.get("/models")
async def list_models(
    principal: Principal, ctx: Ctx
) -> dict[str, Any]:
    """Every endpoint and alias that can be queried."""
    catalog = ctx.serving.catalog()
    created = {r.name: r.creation_timestamp // 1000 for r in ctx.serving.records()}
    data = [_model(e.name, e.task, created.get(e.name, 0)) for e in catalog.endpoints()]
    for alias, target in catalog.aliases().items():
        data.append(_model(alias, catalog.task_of(target), created.get(target, 0)))
    return {"object": "list", "data": data}


@router.get("/models/{name}")
async def get_model(
    name: str, principal: Principal, ctx: Ctx
) -> dict[str, Any]:
    """One queryable endpoint or alias."""
    endpoint = ctx.serving.endpoint(name)
    return _model(name, endpoint.task, ctx.serving.record(endpoint.name).creation_timestamp // 1000)
