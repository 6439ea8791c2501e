"""``/api/2.0/permissions/serving-endpoints/{serving_endpoint_id}``: an endpoint's access
control list, in Databricks' Permissions API shapes.

``GET`` answers ``ObjectPermissions``; ``PUT`` replaces the list and ``PATCH`` adds to it (an
entry for a principal already listed replaces its level), both from
``{"access_control_list": [{"user_name" | "group_name" | "service_principal_name": ...,
"permission_level": ...}]}``; ``GET .../permissionLevels`` lists the levels. The id is the
endpoint's ``id`` (its name is accepted too). Reading or changing the list needs ``CAN_MANAGE``;
changes are audited.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ai_query.errors import ConfigError
from ai_query.serving.audit import audited
from ai_query.serving.http.context import Caller, Ctx, ServerContext
from ai_query.serving.http.problems import bad_request
from ai_query.serving.http.schemas import read_json
from ai_query.serving.permissions import (
    Identity,
    PermissionLevel,
    object_permissions,
    parse_acl,
    permission_levels,
    require,
)

router = APIRouter(prefix="/api/2.0/permissions/serving-endpoints", tags=["permissions"])


@router.get("/{serving_endpoint_id}/permissionLevels")
async def get_permission_levels(
    serving_endpoint_id: str, caller: Caller, ctx: Ctx
) -> dict[str, Any]:
    """The permission levels an endpoint's list may grant (``CAN_VIEW``)."""
    record = ctx.serving.record_by_id(serving_endpoint_id)
    require(caller, record.acl, PermissionLevel.CAN_VIEW, record.name)
    return permission_levels()


@router.get("/{serving_endpoint_id}")
async def get_permissions(serving_endpoint_id: str, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """The endpoint's access control list (``CAN_MANAGE``)."""
    record = ctx.serving.record_by_id(serving_endpoint_id)
    require(caller, record.acl, PermissionLevel.CAN_MANAGE, record.name)
    return object_permissions(record.id, record.acl)


@router.put("/{serving_endpoint_id}")
async def set_permissions(
    serving_endpoint_id: str, request: Request, caller: Caller, ctx: Ctx
) -> dict[str, Any]:
    """Replace the endpoint's access control list (``CAN_MANAGE``)."""
    return await _change(serving_endpoint_id, request, caller, ctx, add=False)


@router.patch("/{serving_endpoint_id}")
async def update_permissions(
    serving_endpoint_id: str, request: Request, caller: Caller, ctx: Ctx
) -> dict[str, Any]:
    """Add to the endpoint's access control list (``CAN_MANAGE``)."""
    return await _change(serving_endpoint_id, request, caller, ctx, add=True)


async def _change(
    endpoint_id: str, request: Request, caller: Identity, ctx: ServerContext, *, add: bool
) -> dict[str, Any]:
    action = "update_permissions" if add else "set_permissions"
    with audited(caller.name, action, endpoint_id) as entry:  # an unknown id: as given
        record = ctx.serving.record_by_id(endpoint_id)
        entry.endpoint = record.name
        require(caller, record.acl, PermissionLevel.CAN_MANAGE, record.name)
        try:
            acl = parse_acl(await read_json(request))
        except ConfigError as exc:
            raise bad_request(str(exc)) from exc
        new = ctx.serving.set_permissions(record, acl, add=add)
    return object_permissions(record.id, new)
