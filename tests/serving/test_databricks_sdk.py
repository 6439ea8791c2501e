"""The official Databricks SDK (``WorkspaceClient``) against ``ai-query serve`` unchanged, and
endpoint permissions on a real server: who may query and manage what, over HTTP and Flight,
and the secret-exfiltration path closed (scopes and the API base allow-list)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, PermissionDenied
from databricks.sdk.service.serving import (
    ChatMessage,
    ChatMessageRole,
    EndpointCoreConfigInput,
    ServedEntityInput,
    ServingEndpointAccessControlRequest,
    ServingEndpointPermissionLevel,
    ServingModelWorkloadType,
)

from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.flight.client import FlightEngineClient
from ai_query.errors import PermissionDeniedError
from ai_query.options import CallOptions
from tests.servers import free_port
from tests.serving.http_servers import HTTPServer

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
#: The server's secret in scope ``llm``: the exfiltration target.
LLM_SECRET = "sk-llm-SECRET-9b2e71"
ALLOWED_BASE = "https://llm.allowed.example.com/v1"
TOKENS = {
    "tok-admin": {"principal": "admin@corp", "groups": ["admins"]},
    "tok-creator": {
        "principal": "creator@corp",
        "groups": ["can_create_endpoints"],
        "secret_scopes": ["team"],
    },
    "tok-user": "user@corp",
}


class SDKServer(HTTPServer):
    flight_port: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SDKServer]:
    work = tmp_path_factory.mktemp("sdk")
    (work / "tokens.json").write_text(json.dumps(TOKENS))
    flight_port = free_port()
    srv = SDKServer(
        work,
        "--engine",
        "deterministic",
        "--port",
        str(flight_port),
        "--tokens-file",
        str(work / "tokens.json"),
        "--database",
        str(work / "db.sqlite"),
        "--allow-external-base",
        ALLOWED_BASE,
        env={"AI_QUERY_SECRET_LLM_KEY": LLM_SECRET, "AI_QUERY_SECRET_TEAM_KEY": "sk-team-77aa"},
    )
    srv.flight_port = flight_port
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def listener() -> Iterator[list[str]]:
    """A local HTTP listener standing for an attacker's URL; yields what it received."""
    received: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode(errors="replace")
            received.append(f"{self.command} {self.path} {dict(self.headers)} {body}")
            self.send_response(200)
            self.end_headers()

        do_GET = do_POST = do_PUT = _any

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    received.append(f"http://127.0.0.1:{httpd.server_address[1]}/v1")  # [0]: its URL
    yield received
    httpd.shutdown()


def _sdk(server: HTTPServer, token: str) -> WorkspaceClient:
    return WorkspaceClient(host=server.url, token=token, auth_type="pat")


def _audit(server: HTTPServer) -> list[dict[str, Any]]:
    lines = []
    for line in server.logs().splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if data.get("logger") == "ai_query.audit":
            lines.append(data)
    return lines


def test_sdk_queries_chat_and_embeddings(server: SDKServer) -> None:
    w = _sdk(server, "tok-user")
    chat = w.serving_endpoints.query(
        name=CHAT,
        messages=[ChatMessage(role=ChatMessageRole.USER, content="hello sdk")],
        max_tokens=32,
    )
    assert chat.choices is not None and chat.choices[0].message is not None
    assert chat.choices[0].message.content == f"{CHAT} says: hello sdk"
    vectors = w.serving_endpoints.query(name="databricks-gte-large-en", input=["a", "b"])
    assert vectors.data is not None
    assert [len(d.embedding or []) for d in vectors.data] == [384, 384]


def test_sdk_lifecycle_and_permissions(server: SDKServer) -> None:
    creator, user, admin = (_sdk(server, t) for t in ("tok-creator", "tok-user", "tok-admin"))
    made = creator.serving_endpoints.create_and_wait(
        name="sdk-chat",
        config=EndpointCoreConfigInput(
            name="sdk-chat",
            served_entities=[
                ServedEntityInput(
                    name="first",
                    entity_name="model-first",
                    workload_size="Small",
                    scale_to_zero_enabled=True,
                )
            ],
        ),
        description="made by the SDK",
    )
    assert made.state is not None and made.state.ready is not None
    assert made.state.ready.value == "READY" and made.creator == "creator@corp"
    got = creator.serving_endpoints.get("sdk-chat")
    assert got.id == made.id and got.permission_level is not None
    assert got.permission_level.value == "CAN_MANAGE"
    assert "sdk-chat" in {e.name for e in creator.serving_endpoints.list()}

    # A query-only user neither sees nor queries it until granted.
    assert "sdk-chat" not in {e.name for e in user.serving_endpoints.list()}
    assert CHAT in {e.name for e in user.serving_endpoints.list()}
    ask = [ChatMessage(role=ChatMessageRole.USER, content="hi")]
    with pytest.raises(PermissionDenied, match="CAN_VIEW on serving endpoint 'sdk-chat'"):
        user.serving_endpoints.get("sdk-chat")
    with pytest.raises(PermissionDenied, match="CAN_QUERY on serving endpoint 'sdk-chat'"):
        user.serving_endpoints.query(name="sdk-chat", messages=ask)

    assert made.id is not None
    acl = creator.serving_endpoints.get_permissions(made.id)
    assert acl.object_id == f"/serving-endpoints/{made.id}"
    assert acl.object_type == "serving-endpoint"
    direct = {
        (a.user_name, p.permission_level.value)
        for a in acl.access_control_list or []
        for p in a.all_permissions or []
        if p.permission_level and not p.inherited
    }
    assert direct == {("creator@corp", "CAN_MANAGE")}
    levels = creator.serving_endpoints.get_permission_levels(made.id).permission_levels or []
    assert [lv.permission_level.value for lv in levels if lv.permission_level] == [
        "CAN_VIEW",
        "CAN_QUERY",
        "CAN_MANAGE",
    ]

    creator.serving_endpoints.update_permissions(
        made.id,
        access_control_list=[
            ServingEndpointAccessControlRequest(
                user_name="user@corp", permission_level=ServingEndpointPermissionLevel.CAN_QUERY
            )
        ],
    )
    answer = user.serving_endpoints.query(name="sdk-chat", messages=ask)
    assert answer.choices and answer.choices[0].message
    assert answer.choices[0].message.content == "first says: hi"
    assert "sdk-chat" in {e.name for e in user.serving_endpoints.list()}
    with pytest.raises(PermissionDenied, match="CAN_MANAGE"):
        user.serving_endpoints.update_config_and_wait(
            "sdk-chat", served_entities=[ServedEntityInput(entity_name="model-evil")]
        )
    with pytest.raises(PermissionDenied, match="CAN_MANAGE"):
        user.serving_endpoints.get_permissions(made.id)

    # PUT replaces: the user keeps CAN_VIEW only; the creator keeps managing (by name, too).
    creator.serving_endpoints.set_permissions(
        "sdk-chat",
        access_control_list=[
            ServingEndpointAccessControlRequest(
                user_name="creator@corp", permission_level=ServingEndpointPermissionLevel.CAN_MANAGE
            ),
            ServingEndpointAccessControlRequest(
                group_name="users", permission_level=ServingEndpointPermissionLevel.CAN_VIEW
            ),
        ],
    )
    assert user.serving_endpoints.get("sdk-chat").permission_level.value == "CAN_VIEW"  # type: ignore[union-attr]
    with pytest.raises(PermissionDenied):
        user.serving_endpoints.query(name="sdk-chat", messages=ask)

    updated = creator.serving_endpoints.update_config_and_wait(
        "sdk-chat",
        served_entities=[
            ServedEntityInput(
                name="second", entity_name="model-2", workload_type=ServingModelWorkloadType.CPU
            )
        ],
    )
    assert updated.config is not None and updated.config.config_version == 2
    answer = creator.serving_endpoints.query(name="sdk-chat", messages=ask)
    assert answer.choices and answer.choices[0].message
    assert answer.choices[0].message.content == "second says: hi"

    with pytest.raises(PermissionDenied):
        user.serving_endpoints.delete("sdk-chat")
    creator.serving_endpoints.delete("sdk-chat")
    with pytest.raises(NotFound):
        admin.serving_endpoints.get("sdk-chat")

    actions = {(a["principal"], a["action"], a["endpoint"], a["outcome"]) for a in _audit(server)}
    for expected in [
        ("creator@corp", "create", "sdk-chat", "success"),
        ("creator@corp", "update_permissions", "sdk-chat", "success"),
        ("creator@corp", "set_permissions", "sdk-chat", "success"),
        ("creator@corp", "update_config", "sdk-chat", "success"),
        ("user@corp", "update_config", "sdk-chat", "denied"),
        ("user@corp", "delete", "sdk-chat", "denied"),
        ("creator@corp", "delete", "sdk-chat", "success"),
    ]:
        assert expected in actions


def test_query_only_user_is_refused_every_management_route(server: SDKServer) -> None:
    with server.client("tok-admin") as c:
        made = c.post(
            "/api/2.0/serving-endpoints",
            json={
                "name": "admins-only",
                "config": {"served_entities": [{"entity_name": "model-a"}]},
            },
        )
        assert made.status_code == 200, made.text
        chat_id = c.get(f"/api/2.0/serving-endpoints/{CHAT}").json()["id"]
    routes = [
        (
            "post",
            "/api/2.0/serving-endpoints",
            {"name": "mine", "config": {"served_entities": [{"entity_name": "m"}]}},
            "create",
        ),
        (
            "put",
            f"/api/2.0/serving-endpoints/{CHAT}/config",
            {"served_entities": [{"entity_name": "m"}]},
            "CAN_MANAGE",
        ),
        (
            "put",
            f"/api/2.0/serving-endpoints/{CHAT}/rate-limits",
            {"rate_limits": []},
            "CAN_MANAGE",
        ),
        ("patch", f"/api/2.0/serving-endpoints/{CHAT}/tags", {"add_tags": []}, "CAN_MANAGE"),
        ("delete", f"/api/2.0/serving-endpoints/{CHAT}", None, "CAN_MANAGE"),
        ("get", f"/api/2.0/permissions/serving-endpoints/{chat_id}", None, "CAN_MANAGE"),
        (
            "put",
            f"/api/2.0/permissions/serving-endpoints/{chat_id}",
            {"access_control_list": []},
            "CAN_MANAGE",
        ),
        (
            "patch",
            f"/api/2.0/permissions/serving-endpoints/{CHAT}",
            {"access_control_list": [{"user_name": "user@corp", "permission_level": "CAN_MANAGE"}]},
            "CAN_MANAGE",
        ),
        ("get", "/api/2.0/serving-endpoints/admins-only", None, "CAN_VIEW"),
        (
            "post",
            "/serving-endpoints/admins-only/invocations",
            {"messages": [{"role": "user", "content": "x"}]},
            "CAN_QUERY",
        ),
    ]
    with server.client("tok-user") as c:
        for method, path, body, needle in routes:
            kwargs = {"json": body} if body is not None else {}
            answer = c.request(method.upper(), path, **kwargs)
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["error_code"] == "PERMISSION_DENIED"
            assert needle in answer.json()["message"]
        refused = c.post(
            "/v1/chat/completions",
            json={"model": "admins-only", "messages": [{"role": "user", "content": "x"}]},
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "PERMISSION_DENIED"
        assert "admins-only" not in {m["id"] for m in c.get("/v1/models").json()["data"]}
        assert c.get(f"/api/2.0/serving-endpoints/{CHAT}").json()["permission_level"] == (
            "CAN_QUERY"
        )

    # Flight: the same permissions; the client raises the same error class.
    url = f"grpc://127.0.0.1:{server.flight_port}"
    client = FlightEngineClient(url, token="tok-user", max_attempts=1)
    try:
        with pytest.raises(
            PermissionDeniedError, match="CAN_QUERY on serving endpoint 'admins-only'"
        ):
            client.run(request_batch(["x"], CallOptions(endpoint="admins-only")))
        ok = align_results(
            client.run(request_batch(["from flight"], CallOptions(endpoint=CHAT))), 1
        )
        assert ok.column("result").to_pylist() == [f"{CHAT} says: from flight"]
    finally:
        client.close()
    admin = FlightEngineClient(url, token="tok-admin", max_attempts=1)
    try:
        out = align_results(admin.run(request_batch(["y"], CallOptions(endpoint="admins-only"))), 1)
        assert out.column("result").to_pylist() == ["model-a says: y"]
    finally:
        admin.close()


def test_secret_exfiltration_is_refused(server: SDKServer, listener: list[str]) -> None:
    attacker = listener[0]
    steal = {
        "name": CHAT,
        "provider": "openai",
        "task": "llm/v1/chat",
        "openai_config": {"openai_api_base": attacker, "openai_api_key": "{{secrets/llm/key}}"},
    }
    bundled_config = {"served_entities": [{"name": "x", "external_model": steal}]}
    answers = {}
    for token in ("tok-user", "tok-creator"):
        with server.client(token) as c:
            answers[f"config-{token}"] = c.put(
                f"/api/2.0/serving-endpoints/{CHAT}/config", json=bundled_config
            )
            answers[f"alias-{token}"] = c.put(
                "/api/2.0/serving-endpoints/databricks-meta-llama-3-3-70b-instruct/config",
                json=bundled_config,
            )
    with server.client("tok-creator") as c:
        allowed_base = {
            **steal,
            "openai_config": {
                "openai_api_base": ALLOWED_BASE,
                "openai_api_key": "{{secrets/llm/key}}",
            },
        }
        answers["scope"] = c.post(
            "/api/2.0/serving-endpoints",
            json={
                "name": "steal-scope",
                "config": {"served_entities": [{"external_model": allowed_base}]},
            },
        )
        own_scope = {
            **steal,
            "openai_config": {
                "openai_api_base": attacker,
                "openai_api_key": "{{secrets/team/key}}",
            },
        }
        answers["base"] = c.post(
            "/api/2.0/serving-endpoints",
            json={
                "name": "steal-base",
                "config": {"served_entities": [{"external_model": own_scope}]},
            },
        )
        plaintext = {
            **steal,
            "openai_config": {"openai_api_base": attacker, "openai_api_key_plaintext": "mine"},
        }
        answers["plaintext"] = c.post(
            "/api/2.0/serving-endpoints",
            json={
                "name": "steal-prompts",
                "config": {"served_entities": [{"external_model": plaintext}]},
            },
        )
    for key, answer in answers.items():
        assert answer.status_code == 403, (key, answer.text)
        assert answer.json()["error_code"] == "PERMISSION_DENIED"
    assert "secret scope 'llm'" in answers["scope"].json()["message"]
    for key in ("base", "plaintext"):
        assert attacker in answers[key].json()["message"]
        assert "allow-list" in answers[key].json()["message"]

    # Still serving the bundled model; nothing was created; the listener heard nothing.
    with server.client("tok-user") as c:
        chat = c.post(
            "/v1/chat/completions",
            json={"model": CHAT, "messages": [{"role": "user", "content": "still mine"}]},
        )
        assert chat.json()["choices"][0]["message"]["content"] == f"{CHAT} says: still mine"
    with server.client("tok-admin") as c:
        for name in ("steal-scope", "steal-base", "steal-prompts"):
            assert c.get(f"/api/2.0/serving-endpoints/{name}").status_code == 404
        bundled = c.get(f"/api/2.0/serving-endpoints/{CHAT}").json()
        assert "external_model" not in json.dumps(bundled)
    assert listener[1:] == []
    assert LLM_SECRET not in server.logs()
    denied = {
        (a["principal"], a["action"], a["endpoint"])
        for a in _audit(server)
        if a["outcome"] == "denied"
    }
    assert ("creator@corp", "create", "steal-scope") in denied
    assert ("user@corp", "update_config", CHAT) in denied

    # With the scope and an allowed base, the creator may create it.
    with server.client("tok-creator") as c:
        fine = {
            **steal,
            "openai_config": {
                "openai_api_base": ALLOWED_BASE + "/",
                "openai_api_key": "{{secrets/team/key}}",
            },
        }
        made = c.post(
            "/api/2.0/serving-endpoints",
            json={
                "name": "team-external",
                "config": {"served_entities": [{"external_model": fine}]},
            },
        )
        assert made.status_code == 200, made.text
        assert c.delete("/api/2.0/serving-endpoints/team-external").status_code == 200


def test_auth_off_caller_is_admin(tmp_path: Path) -> None:
    """No tokens: the (loopback) caller is an administrator, as in local development."""
    srv = HTTPServer(
        tmp_path, "--engine", "deterministic", "--database", str(tmp_path / "db.sqlite")
    ).start()
    try:
        w = _sdk(srv, "anything")
        made = w.serving_endpoints.create_and_wait(
            name="local",
            config=EndpointCoreConfigInput(
                name="local", served_entities=[ServedEntityInput(entity_name="model-l")]
            ),
        )
        assert made.permission_level is not None
        assert made.permission_level.value == "CAN_MANAGE"
        with httpx.Client(base_url=srv.url) as c:
            external = {
                "name": "m",
                "provider": "openai",
                "task": "llm/v1/chat",
                "openai_config": {
                    "openai_api_base": "http://127.0.0.1:9/v1",
                    "openai_api_key_plaintext": "x-local",
                },
            }
            answer = c.put(
                "/api/2.0/serving-endpoints/local/config",
                json={"served_entities": [{"external_model": external}]},
            )
            assert answer.status_code == 200, answer.text
    finally:
        srv.stop()


def test_sdk_queries_real_vllm(vllm_server: HTTPServer) -> None:
    """The SDK against the server on real vLLM (auth off): chat agrees with the OpenAI route,
    embeddings are unit vectors."""
    import numpy as np
    import openai

    w = _sdk(vllm_server, "unused")
    question = "What is the capital of France?"
    chat = w.serving_endpoints.query(
        name=CHAT,
        messages=[ChatMessage(role=ChatMessageRole.USER, content=question)],
        max_tokens=12,
        temperature=0.0,
    )
    assert chat.choices and chat.choices[0].message and chat.choices[0].message.content
    direct = openai.OpenAI(base_url=f"{vllm_server.url}/v1", api_key="unused", timeout=300)
    same = direct.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": question}], max_tokens=12, temperature=0.0
    )
    assert chat.choices[0].message.content == same.choices[0].message.content
    assert chat.usage is not None and chat.usage.completion_tokens
    vectors = w.serving_endpoints.query(name=EMBED, input=["A cat sits.", "A kitten rests."])
    assert vectors.data is not None
    array = np.array([d.embedding for d in vectors.data])
    assert array.shape == (2, 384)
    assert np.allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-4)
