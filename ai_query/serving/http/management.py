"""``/api/2.0/serving-endpoints``: create, get, list, delete, update config, rate limits, tags.

Bodies and answers follow Databricks' Serving Endpoints REST API. Each route checks the caller's
permission on the endpoint (:mod:`ai_query.serving.permissions`): ``CAN_VIEW`` to get it (a
list shows only those the caller can view), ``CAN_MANAGE`` to change or delete it; creating
needs group ``admins`` or ``can_create_endpoints``. Every change is audited
(:mod:`ai_query.serving.audit`). Answers never carry a secret:
``openai_api_key`` is a ``{{secrets/scope/key}}`` reference, shown as given, and a plain-text
key (``openai_api_key_plaintext``) is never returned.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ai_query.catalog import Endpoint
from ai_query.engine.process.supervision import EngineHealth, EngineState
from ai_query.serving.audit import audited
from ai_query.serving.http.context import Caller, Ctx
from ai_query.serving.http.schemas import read_json
from ai_query.serving.permissions import Identity, PermissionLevel
from ai_query.serving.state import ServingState
from ai_query.serving.store import EndpointRecord

router = APIRouter(prefix="/api/2.0/serving-endpoints", tags=["management"])


#: Databricks' served-entity deployment state for each engine state.
_DEPLOYMENT = {
    EngineState.NOT_STARTED: "DEPLOYMENT_READY",
    EngineState.READY: "DEPLOYMENT_READY",
    EngineState.STARTING: "DEPLOYMENT_CREATING",
    EngineState.DEAD: "DEPLOYMENT_RECOVERING",
    EngineState.RESTARTING: "DEPLOYMENT_RECOVERING",
    EngineState.FAILED: "DEPLOYMENT_FAILED",
}


def entity_json(
    endpoint: Endpoint, record: EndpointRecord, *, deployed: bool, serving: ServingState
) -> list[Any]:
    """The served entities of ``endpoint`` as Databricks shows them (with their state)."""
    out = []
    for entity in endpoint.config.served_entities:
        data = entity.model_dump(mode="json", exclude_none=True)
        data["name"] = entity.served_name
        external = data.get("external_model", {}).get("openai_config")
        if external is not None:
            external.pop("openai_api_key_plaintext", None)
        if deployed:
            health = serving.entity_health(entity)
            state = {
                "deployment": _DEPLOYMENT[health.state],
                "deployment_state_message": _deployment_message(health),
            }
        else:
            state = {"deployment": "DEPLOYMENT_CREATING", "deployment_state_message": "starting"}
        data["state"] = state
        data["creator"] = record.creator
        data["creation_timestamp"] = record.creation_timestamp
        out.append(data)
    return out


def _deployment_message(health: EngineHealth) -> str:
    if health.state.ready:
        return ""
    message = f"engine {health.state.value.lower()} (restarts: {health.restarts})"
    return f"{message}; last error: {health.last_error}" if health.last_error else message


def _config_json(
    endpoint: Endpoint, record: EndpointRecord, version: int, deployed: bool, serving: ServingState
) -> Any:
    config: dict[str, Any] = {
        "served_entities": entity_json(endpoint, record, deployed=deployed, serving=serving),
        "config_version": version,
    }
    if endpoint.config.traffic_config is not None:
        config["traffic_config"] = endpoint.config.traffic_config.model_dump(
            mode="json", exclude_none=True
        )
    else:
        first = endpoint.config.served_entities[0].served_name
        config["traffic_config"] = {
            "routes": [{"served_model_name": first, "traffic_percentage": 100}]
        }
    if endpoint.config.auto_capture_config is not None:
        config["auto_capture_config"] = endpoint.config.auto_capture_config
    return config


def endpoint_json(
    record: EndpointRecord, serving: ServingState, caller: Identity | None = None
) -> dict[str, Any]:
    """An endpoint in the shape of Databricks' ``ServingEndpointDetailed``
    (``permission_level``: the caller's)."""
    latest = record.latest
    level = serving.level(caller, record) if caller is not None else PermissionLevel.CAN_MANAGE
    data: dict[str, Any] = {
        "name": record.name,
        "id": record.id,
        "creator": record.creator,
        "creation_timestamp": record.creation_timestamp,
        "last_updated_timestamp": record.last_updated_timestamp,
        "state": {"ready": serving.readiness(record), "config_update": record.config_update},
        "task": latest.task,
        "tags": [t.model_dump(mode="json", exclude_none=True) for t in latest.tags],
        "rate_limits": [r.model_dump(mode="json", exclude_none=True) for r in latest.rate_limits],
        "permission_level": level.value if level is not None else None,
        "route_optimized": bool(latest.route_optimized),
    }
    if latest.description is not None:
        data["description"] = latest.description
    if record.served is not None:
        data["config"] = _config_json(record.served, record, record.config_version, True, serving)
    if record.pending is not None:
        pending = _config_json(record.pending, record, record.config_version + 1, False, serving)
        pending["start_time"] = record.last_updated_timestamp
        data["pending_config"] = pending
    if record.message:
        data["state"]["config_update_message"] = record.message
    return data


@router.post("")
async def create_endpoint(request: Request, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Create a serving endpoint; it is ``NOT_READY`` until its models have started."""
    body = await read_json(request)
    name = body.get("name") if isinstance(body, dict) else None
    with audited(caller.name, "create", name if isinstance(name, str) else None):
        record = ctx.serving.create(body, caller)
    return endpoint_json(record, ctx.serving, caller)


@router.get("")
async def list_endpoints(caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Every serving endpoint the caller can view."""
    return {
        "endpoints": [
            endpoint_json(r, ctx.serving, caller)
            for r in ctx.serving.records()
            if ctx.serving.level(caller, r) is not None
        ]
    }


@router.get("/{name}")
async def get_endpoint(name: str, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """One serving endpoint (``CAN_VIEW``)."""
    record = ctx.serving.authorize(caller, name, PermissionLevel.CAN_VIEW)
    return endpoint_json(record, ctx.serving, caller)


@router.delete("/{name}")
async def delete_endpoint(name: str, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Delete an endpoint created through the API (``CAN_MANAGE``)."""
    with audited(caller.name, "delete", name):
        ctx.serving.authorize(caller, name, PermissionLevel.CAN_MANAGE)
        ctx.serving.delete(name)
    return {}


@router.put("/{name}/config")
async def update_config(name: str, request: Request, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Replace served entities and traffic; the old config serves until the new one is ready
    (``CAN_MANAGE``)."""
    with audited(caller.name, "update_config", name):
        ctx.serving.authorize(caller, name, PermissionLevel.CAN_MANAGE)
        record = ctx.serving.update_config(name, await read_json(request), caller)
    return endpoint_json(record, ctx.serving, caller)


@router.put("/{name}/rate-limits")
async def put_rate_limits(
    name: str, request: Request, caller: Caller, ctx: Ctx
) -> dict[str, Any]:
    """Replace the endpoint's rate limits (``CAN_MANAGE``)."""
    with audited(caller.name, "set_rate_limits", name):
        ctx.serving.authorize(caller, name, PermissionLevel.CAN_MANAGE)
        limits = ctx.serving.set_rate_limits(name, await read_json(request))
    return {"rate_limits": [r.model_dump(mode="json", exclude_none=True) for r in limits]}


@router.patch("/{name}/tags")
async def patch_tags(name: str, request: Request, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Add and delete tags (``CAN_MANAGE``)."""
    with audited(caller.name, "patch_tags", name):
        ctx.serving.authorize(caller, name, PermissionLevel.CAN_MANAGE)
        tags = ctx.serving.patch_tags(name, await read_json(request))
    return {"tags": [t.model_dump(mode="json", exclude_none=True) for t in tags]}
