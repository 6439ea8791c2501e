"""Endpoint permissions as pure logic (levels, groups, admins, aliases, secret scopes, the API
base allow-list), the tokens file's groups, and the ACL's storage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ai_query.catalog import Endpoint
from ai_query.errors import ConfigError, PermissionDeniedError
from ai_query.serving.auth import ANONYMOUS_IDENTITY, TokenAuth
from ai_query.serving.permissions import (
    ADMINS,
    CAN_CREATE_ENDPOINTS,
    CATALOG_ACL,
    USERS,
    ExternalPolicy,
    Grant,
    Identity,
    PermissionLevel,
    acl_from_data,
    acl_to_data,
    allows,
    creator_acl,
    external_bases,
    level_of,
    merge,
    normalise_base,
    object_permissions,
    parse_acl,
    permission_levels,
    require,
    require_create,
    resolve_acl,
)
from ai_query.serving.store import EndpointRecord, EndpointStore

VIEW, QUERY, MANAGE = (
    PermissionLevel.CAN_VIEW,
    PermissionLevel.CAN_QUERY,
    PermissionLevel.CAN_MANAGE,
)
ALICE = Identity.of("alice")
BOB = Identity.of("bob", groups=["analysts"])
ROOT = Identity.of("root", groups=[ADMINS])
CREATOR = Identity.of("carol", groups=[CAN_CREATE_ENDPOINTS], secret_scopes=["team"])


def test_levels_are_ordered() -> None:
    assert [level.value for level in PermissionLevel] == ["CAN_VIEW", "CAN_QUERY", "CAN_MANAGE"]
    assert MANAGE.covers(QUERY) and MANAGE.covers(VIEW) and QUERY.covers(VIEW)
    assert not VIEW.covers(QUERY) and not QUERY.covers(MANAGE)


def test_every_principal_is_in_users_and_admins_manage_everything() -> None:
    assert USERS in ALICE.groups and not ALICE.is_admin and not ALICE.may_create
    assert ROOT.is_admin and ROOT.may_create and CREATOR.may_create
    assert level_of(ROOT, ()) is MANAGE  # even with nobody listed
    assert level_of(ALICE, ()) is None
    require_create(CREATOR)
    with pytest.raises(PermissionDeniedError, match="'alice' may not create"):
        require_create(ALICE)


@pytest.mark.parametrize(
    ("acl", "who", "expected"),
    [
        pytest.param(creator_acl("alice"), ALICE, MANAGE, id="creator"),
        pytest.param(creator_acl("alice"), BOB, None, id="not-the-creator"),
        pytest.param(CATALOG_ACL, BOB, QUERY, id="catalog-users"),
        pytest.param((Grant("group_name", "analysts", VIEW),), BOB, VIEW, id="group"),
        pytest.param((Grant("group_name", "analysts", VIEW),), ALICE, None, id="other-group"),
        pytest.param(
            (Grant("group_name", USERS, VIEW), Grant("user_name", "bob", MANAGE)),
            BOB,
            MANAGE,
            id="strongest-wins",
        ),
        pytest.param(
            (Grant("service_principal_name", "bob", QUERY),), BOB, QUERY, id="service-principal"
        ),
        pytest.param((Grant("user_name", "analysts", MANAGE),), BOB, None, id="user-not-group"),
    ],
)
def test_level_of(acl: tuple[Grant, ...], who: Identity, expected: PermissionLevel | None) -> None:
    assert level_of(who, acl) is expected


def test_require_names_principal_endpoint_and_level() -> None:
    require(BOB, CATALOG_ACL, QUERY, "chat")
    assert allows(BOB, CATALOG_ACL, VIEW) and not allows(BOB, CATALOG_ACL, MANAGE)
    with pytest.raises(PermissionDeniedError) as info:
        require(BOB, CATALOG_ACL, MANAGE, "chat")
    assert str(info.value) == "principal 'bob' does not have CAN_MANAGE on serving endpoint 'chat'"


def test_aliases_have_their_targets_list() -> None:
    acls = {"chat": creator_acl("alice"), "open": CATALOG_ACL}
    aliases = {"databricks-llama": "chat", "friendly": "open"}
    assert resolve_acl("databricks-llama", acls, aliases) == creator_acl("alice")
    assert resolve_acl("friendly", acls, aliases) == CATALOG_ACL
    assert resolve_acl("nope", acls, aliases) is None
    assert level_of(BOB, resolve_acl("databricks-llama", acls, aliases) or ()) is None


def test_parse_merge_and_store_shapes() -> None:
    body = {
        "access_control_list": [
            {"user_name": "bob", "permission_level": "CAN_QUERY"},
            {"group_name": "analysts", "permission_level": "CAN_VIEW"},
            {"user_name": "bob", "permission_level": "CAN_MANAGE"},  # the last one wins
        ]
    }
    acl = parse_acl(body)
    assert acl == (Grant("group_name", "analysts", VIEW), Grant("user_name", "bob", MANAGE))
    assert acl_from_data(acl_to_data(acl)) == acl
    merged = merge(creator_acl("alice"), (Grant("user_name", "alice", VIEW),))
    assert merged == (Grant("user_name", "alice", VIEW),)
    assert parse_acl({}) == ()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param([], "access_control_list", id="not-an-object"),
        pytest.param({"acl": []}, "unknown field", id="unknown-top"),
        pytest.param(
            {"access_control_list": [{"permission_level": "CAN_VIEW"}]}, "exactly one", id="nobody"
        ),
        pytest.param(
            {
                "access_control_list": [
                    {"user_name": "a", "group_name": "b", "permission_level": "CAN_VIEW"}
                ]
            },
            "exactly one",
            id="two-principals",
        ),
        pytest.param(
            {"access_control_list": [{"user_name": "a", "permission_level": "CAN_RUN"}]},
            "CAN_VIEW, CAN_QUERY, CAN_MANAGE",
            id="bad-level",
        ),
        pytest.param(
            {"access_control_list": [{"user_name": "a", "permission_level": "CAN_VIEW", "x": 1}]},
            "unknown field",
            id="unknown-entry-field",
        ),
    ],
)
def test_parse_refuses_bad_bodies(body: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_acl(body)


def test_databricks_answer_shapes() -> None:
    answer = object_permissions("abc", (Grant("user_name", "alice", MANAGE),))
    assert answer["object_id"] == "/serving-endpoints/abc"
    assert answer["object_type"] == "serving-endpoint"
    assert answer["access_control_list"][0] == {
        "user_name": "alice",
        "all_permissions": [{"permission_level": "CAN_MANAGE", "inherited": False}],
    }
    admins = answer["access_control_list"][1]
    assert admins["group_name"] == ADMINS and admins["all_permissions"][0]["inherited"] is True
    levels = [p["permission_level"] for p in permission_levels()["permission_levels"]]
    assert levels == ["CAN_VIEW", "CAN_QUERY", "CAN_MANAGE"]


def _external(base: str | None, key: str | None = None, name: str = "ext") -> Endpoint:
    config: dict[str, Any] = {}
    if base is not None:
        config["openai_api_base"] = base
    if key is not None:
        config["openai_api_key"] = key
    return Endpoint.model_validate(
        {
            "name": name,
            "config": {
                "served_entities": [
                    {
                        "external_model": {
                            "name": "m",
                            "task": "llm/v1/chat",
                            "openai_config": config,
                        }
                    }
                ]
            },
        }
    )


def test_secret_scopes_are_granted_per_principal() -> None:
    policy = ExternalPolicy.of(["https://llm.example.com/v1"])
    base = "https://llm.example.com/v1"
    policy.check(CREATOR, _external(base, "{{secrets/team/key}}"))
    policy.check(ROOT, _external(base, "{{ secrets/llm/key }}"))  # admins: every scope
    with pytest.raises(PermissionDeniedError, match="secret scope 'llm'"):
        policy.check(CREATOR, _external(base, "{{secrets/llm/key}}"))
    with pytest.raises(PermissionDeniedError, match="secret scope 'team'"):
        policy.check(ALICE, _external(base, "{{secrets/team/key}}"))


@pytest.mark.parametrize(
    ("base", "allowed"),
    [
        pytest.param("https://llm.example.com/v1", True, id="exact"),
        pytest.param("https://LLM.example.com/v1/", True, id="case-and-slash"),
        pytest.param("https://llm.example.com/v1/deployments/x", True, id="under-the-path"),
        pytest.param("https://llm.example.com/v1evil", False, id="not-a-path-boundary"),
        pytest.param("https://llm.example.com.evil.io/v1", False, id="other-host"),
        pytest.param("http://llm.example.com/v1", False, id="other-scheme"),
        pytest.param("https://llm.example.com:8443/v1", False, id="other-port"),
        pytest.param("http://127.0.0.1:9999/v1", False, id="local-listener"),
    ],
)
def test_api_base_allow_list(base: str, allowed: bool) -> None:
    policy = ExternalPolicy.of(["https://llm.example.com/v1/"])
    endpoint = _external(base, "{{secrets/team/key}}")
    if allowed:
        policy.check(CREATOR, endpoint)
    else:
        with pytest.raises(PermissionDeniedError, match="not on this server's allow-list"):
            policy.check(CREATOR, endpoint)
        policy.check(ROOT, endpoint)  # administrators run the server: any base


def test_default_base_and_catalog_bases() -> None:
    assert normalise_base("HTTPS://Api.OpenAI.com:443/v1/") == "https://api.openai.com:443/v1"
    with pytest.raises(PermissionDeniedError, match=r"api\.openai\.com"):
        ExternalPolicy().check(CREATOR, _external(None))
    catalog_bases = external_bases([_external("http://10.0.0.5:8000/v1"), _external(None)])
    assert catalog_bases == {"http://10.0.0.5:8000/v1", "https://api.openai.com/v1"}
    ExternalPolicy.of(catalog_bases).check(CREATOR, _external(None))
    local = Endpoint.model_validate(
        {"name": "x", "config": {"served_entities": [{"entity_name": "m"}]}}
    )
    ExternalPolicy().check(ALICE, local)  # nothing external: nothing to check


def test_tokens_file_entries(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "tok-a": "alice",
                "tok-c": {
                    "principal": "carol",
                    "groups": ["can_create_endpoints"],
                    "secret_scopes": ["team"],
                },
                "tok-r": {"principal": "root", "groups": ["admins"]},
            }
        )
    )
    auth = TokenAuth.from_file(path)
    assert auth.identify("tok-a") == Identity.of("alice")
    assert auth.identify_header("Bearer tok-c") == CREATOR
    assert auth.authenticate("tok-r") == "root" and auth.identify("tok-r").is_admin
    assert TokenAuth().identify(None) is ANONYMOUS_IDENTITY and ANONYMOUS_IDENTITY.is_admin


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param({"principal": ""}, id="empty-principal"),
        pytest.param({"principal": "x", "groups": "admins"}, id="groups-not-a-list"),
        pytest.param({"principal": "x", "roles": []}, id="unknown-key"),
        pytest.param(3, id="not-a-name"),
    ],
)
def test_bad_tokens_entries_never_name_the_token(entry: Any) -> None:
    with pytest.raises(ConfigError) as info:
        TokenAuth({"tok-SECRET-123": entry})
    assert "tok-SECRET-123" not in str(info.value)


def test_store_keeps_the_list(tmp_path: Path) -> None:
    endpoint = _external("https://llm.example.com/v1", name="kept")
    record = EndpointRecord(
        name="kept",
        id="abc",
        creator="carol",
        creation_timestamp=1,
        last_updated_timestamp=1,
        config_version=1,
        served=endpoint,
        acl=(Grant("user_name", "carol", MANAGE), Grant("group_name", "analysts", QUERY)),
    )
    store = EndpointStore(tmp_path / "db.sqlite")
    store.put(record)
    store.put(record.evolve(name="legacy", acl=()))
    store.close()
    loaded = {r.name: r for r in EndpointStore(tmp_path / "db.sqlite").load()}
    assert loaded["kept"].acl == record.acl
    assert loaded["legacy"].acl == ()  # an empty list stays empty: admins only


def test_databricks_fields_without_effect_are_accepted() -> None:
    body = {
        "name": "sdk",
        "budget_policy_id": "p",
        "email_notifications": {"on_update_success": ["a@b.c"]},
        "ai_gateway": {"usage_tracking_config": {"enabled": True}},
        "route_optimized": False,
        "config": {
            "name": "sdk",
            "served_entities": [
                {
                    "entity_name": "m",
                    "workload_size": "Small",
                    "workload_type": "CPU",
                    "scale_to_zero_enabled": True,
                    "environment_vars": {"A": "b"},
                    "instance_profile_arn": "arn:x",
                    "min_provisioned_throughput": 0,
                    "max_provisioned_throughput": 100,
                }
            ],
        },
    }
    endpoint = Endpoint.model_validate(body)
    assert endpoint.config.served_entities[0].entity_name == "m"
    with pytest.raises(ValueError, match="surprise"):
        Endpoint.model_validate({**body, "surprise": 1})
    with pytest.raises(ValueError, match="surprise"):
        Endpoint.model_validate({**body, "config": {**body["config"], "surprise": 1}})
