"""Databricks' query API: ``POST /serving-endpoints/{name}/invocations``.

The body is what the endpoint's task takes (chat ``messages``, completions ``prompt``,
embeddings ``input``), with the same optional fields as the OpenAI-compatible API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ai_query.serving.http.context import Caller, Ctx
from ai_query.serving.http.invoke import invoke
from ai_query.serving.http.schemas import read_json

router = APIRouter(tags=["databricks"])


@router.post("/serving-endpoints/{name}/invocations")
async def invocations(
    name: str,
    request: Request,
    caller: Caller,
    ctx: Ctx,
) -> Response:
    """Query endpoint ``name`` (``CAN_QUERY``)."""
    return await invoke(
        ctx,
        name,
        await read_json(request),
        caller=caller,
        route="invocations",
        client_request_id=request.headers.get("x-client-request-id"),
    )
