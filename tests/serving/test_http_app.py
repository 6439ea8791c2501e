"""The HTTP app in-process (FastAPI's TestClient) on the deterministic backend: management API,
query routes, auth, rate limits, inference table. The subprocess and real-vLLM tests are in
test_http_server.py and test_http_vllm.py."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from fastapi.testclient import TestClient

from ai_query.serving.auth import TokenAuth
from ai_query.serving.http import create_app
from ai_query.serving.options import ServeOptions
from ai_query.serving.ratelimit import RateLimiter

CHAT = "smollm2-135m-instruct"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    options = ServeOptions(
        engine="deterministic",
        database=tmp_path / "endpoints.sqlite",
        inference_table=tmp_path / "inference",
        inference_flush_seconds=0.05,
    )
    auth = TokenAuth({"tok-alice": {"principal": "alice", "groups": ["admins"]}, "tok-bob": "bob"})
    app = create_app(options, auth=auth, limiter=RateLimiter(clock=clock))
    with TestClient(app, headers={"Authorization": "Bearer tok-alice"}) as c:
        yield c


def _chat(client: TestClient, model: str = CHAT, **extra: Any) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
    return client.post("/v1/chat/completions", json=body)


def _wait_ready(client: TestClient, name: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = client.get(f"/api/2.0/serving-endpoints/{name}").json()
        if data["state"]["config_update"] != "IN_PROGRESS":
            return data
        time.sleep(0.02)
    raise TimeoutError(name)


def _endpoint(name: str, *entities: str, routes: dict[str, int] | None = None, **extra: Any) -> Any:
    config: dict[str, Any] = {
        "served_entities": [
            {"name": e, "entity_name": f"model-{e}", "task": "llm/v1/chat"} for e in entities
        ]
    }
    if routes:
        config["traffic_config"] = {
            "routes": [{"served_model_name": n, "traffic_percentage": p} for n, p in routes.items()]
        }
    return {"name": name, "config": config, **extra}


def test_create_get_list_update_delete(client: TestClient) -> None:
    created = client.post("/api/2.0/serving-endpoints", json=_endpoint("my-chat", "a"))
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["state"] == {"ready": "NOT_READY", "config_update": "IN_PROGRESS"}
    assert body["creator"] == "alice" and len(body["id"]) == 32
    ready = _wait_ready(client, "my-chat")
    assert ready["state"]["ready"] == "READY"
    assert ready["config"]["config_version"] == 1
    assert ready["config"]["served_entities"][0]["state"]["deployment"] == "DEPLOYMENT_READY"
    names = [e["name"] for e in client.get("/api/2.0/serving-endpoints").json()["endpoints"]]
    assert {"my-chat", CHAT, "all-minilm-l6-v2"} <= set(names)
    answer = _chat(client, "my-chat").json()
    assert answer["model"] == "a"
    assert answer["choices"][0]["message"]["content"].startswith("a says")

    updated = client.put("/api/2.0/serving-endpoints/my-chat/config",
                         json=_endpoint("x", "b")["config"])
    assert updated.status_code == 200
    assert _wait_ready(client, "my-chat")["config"]["config_version"] == 2
    assert _chat(client, "my-chat").json()["model"] == "b"

    assert client.delete("/api/2.0/serving-endpoints/my-chat").json() == {}
    assert client.get("/api/2.0/serving-endpoints/my-chat").status_code == 404
    missing = _chat(client, "my-chat")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "RESOURCE_DOES_NOT_EXIST"


def test_update_serves_old_config_until_new_is_ready(client: TestClient) -> None:
    client.post("/api/2.0/serving-endpoints", json=_endpoint("slow", "old"))
    _wait_ready(client, "slow")
    config = {"served_entities": [{"name": "new", "entity_name": "model-new", "task": "llm/v1/chat",
                                   "engine_args": {"startup_seconds": 0.6}}]}
    assert client.put("/api/2.0/serving-endpoints/slow/config", json=config).status_code == 200
    during = client.get("/api/2.0/serving-endpoints/slow").json()
    assert during["state"] == {"ready": "READY", "config_update": "IN_PROGRESS"}
    assert during["pending_config"]["config_version"] == 2
    assert _chat(client, "slow").json()["model"] == "old"
    again = client.put("/api/2.0/serving-endpoints/slow/config", json=config)
    assert again.status_code == 409 and again.json()["error_code"] == "RESOURCE_CONFLICT"
    assert _wait_ready(client, "slow")["config"]["config_version"] == 2
    assert _chat(client, "slow").json()["model"] == "new"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param({"name": "x", "config": {"served_entities": []}}, "served_entities",
                     id="no-entities"),
        pytest.param({"name": "bad name!", "config": _endpoint("x", "a")["config"]}, "name",
                     id="bad-name"),
        pytest.param(_endpoint("x", "a", "b", routes={"a": 50, "b": 40}), "add up to 100",
                     id="routes-not-100"),
        pytest.param(_endpoint("x", "a", routes={"zz": 100}), "unknown served entities",
                     id="route-to-unknown"),
        pytest.param({"name": "x", "config": {"served_entities": [
            {"name": "e", "external_model": {"name": "m", "provider": "openai",
             "task": "llm/v1/chat"}}, {"name": "l", "entity_name": "y", "task": "llm/v1/chat"}]}},
            "exactly one served entity", id="external-not-alone"),
        pytest.param({"name": "x", "config": {"served_entities": [
            {"external_model": {"name": "m", "provider": "openai", "task": "llm/v1/chat",
             "openai_config": {"openai_api_key": "{{secrets/none/missing}}"}}}]}},
            "secrets/none/missing", id="missing-secret"),
        pytest.param({"name": "x", "config": _endpoint("x", "a")["config"], "surprise": 1},
                     "surprise", id="unknown-field"),
    ],
)
def test_invalid_create_is_400(client: TestClient, body: Any, needle: str) -> None:
    answer = client.post("/api/2.0/serving-endpoints", json=body)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert needle in answer.json()["message"]


def test_conflicts_and_catalog_endpoints(client: TestClient) -> None:
    taken = client.post("/api/2.0/serving-endpoints", json=_endpoint(CHAT, "a"))
    assert taken.status_code == 409 and taken.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    refused = client.delete(f"/api/2.0/serving-endpoints/{CHAT}")
    assert refused.status_code == 400
    assert client.get("/api/2.0/serving-endpoints/nope").status_code == 404


def test_tags_and_rate_limits(client: TestClient, clock: Clock) -> None:
    client.post("/api/2.0/serving-endpoints",
                json=_endpoint("tagged", "a", tags=[{"key": "team", "value": "x"}]))
    _wait_ready(client, "tagged")
    tags = client.patch("/api/2.0/serving-endpoints/tagged/tags",
                        json={"add_tags": [{"key": "env", "value": "dev"}],
                              "delete_tags": ["team"]})
    assert tags.json() == {"tags": [{"key": "env", "value": "dev"}]}
    limits = client.put("/api/2.0/serving-endpoints/tagged/rate-limits",
                        json={"rate_limits": [{"calls": 2, "key": "user",
                                               "renewal_period": "minute"}]})
    assert limits.status_code == 200
    got = client.get("/api/2.0/serving-endpoints/tagged").json()
    assert got["tags"] == [{"key": "env", "value": "dev"}]
    assert got["rate_limits"][0]["calls"] == 2

    assert [_chat(client, "tagged").status_code for _ in range(2)] == [200, 200]
    refused = _chat(client, "tagged")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "60"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    granted = client.patch("/api/2.0/permissions/serving-endpoints/tagged", json={
        "access_control_list": [{"user_name": "bob", "permission_level": "CAN_QUERY"}]})
    assert granted.status_code == 200, granted.text
    bob = client.post("/v1/chat/completions", headers={"Authorization": "Bearer tok-bob"},
                      json={"model": "tagged", "messages": [{"role": "user", "content": "x"}]})
    assert bob.status_code == 200  # key "user": bob has his own window
    clock.now += 60
    assert _chat(client, "tagged").status_code == 200
    bad = client.put("/api/2.0/serving-endpoints/tagged/rate-limits",
                     json={"rate_limits": [{"calls": 0}]})
    assert bad.status_code == 400 and "rate_limits[0].calls" in bad.json()["message"]


def test_auth_required_everywhere_but_health(client: TestClient) -> None:
    anonymous = {"Authorization": ""}
    for method, path in [("get", "/v1/models"), ("post", "/v1/chat/completions"),
                         ("get", "/api/2.0/serving-endpoints"), ("get", "/metrics"),
                         ("post", f"/serving-endpoints/{CHAT}/invocations")]:
        answer = client.request(method, path, headers=anonymous, json={})
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]["message"]
    assert client.get("/health", headers=anonymous).status_code == 200


def test_chat_stream_tools_and_structured(client: TestClient) -> None:
    plain = _chat(client, temperature=0, n=2).json()
    assert [c["index"] for c in plain["choices"]] == [0, 1]
    usage = plain["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    with client.stream("POST", "/v1/chat/completions", json={
        "model": CHAT, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "one two three"}]}) as stream:
        events = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == f"{CHAT} says: one two three"
    assert chunks[-1]["usage"]["completion_tokens"] > 0

    schema = {"type": "object", "properties": {"label": {"enum": ["pos", "neg"]}},
              "required": ["label"]}
    structured = _chat(client, response_format={"type": "json_schema",
                                                "json_schema": {"name": "s", "schema": schema}})
    content = structured.json()["choices"][0]["message"]["content"]
    assert json.loads(content)["label"] in ("pos", "neg")

    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]
    called = _chat(client, tools=tools, tool_choice="required").json()["choices"][0]
    assert called["finish_reason"] == "tool_calls"
    assert called["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    bad = _chat(client, tools=tools, tool_choice={"type": "function", "function": {"name": "x"}})
    assert bad.status_code == 400


def test_embeddings_completions_invocations(client: TestClient) -> None:
    floats = client.post("/v1/embeddings", json={"model": "databricks-gte-large-en",
                                                 "input": ["a", "b"]}).json()
    assert len(floats["data"]) == 2 and len(floats["data"][0]["embedding"]) == 384
    packed = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "a",
                                                 "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vector, floats["data"][0]["embedding"], atol=1e-6)

    cmpl = client.post("/v1/completions", json={"model": CHAT, "prompt": ["x", "y"], "n": 2}).json()
    assert len(cmpl["choices"]) == 4

    inv = client.post(f"/serving-endpoints/{CHAT}/invocations",
                      json={"messages": [{"role": "user", "content": "hi"}]})
    assert inv.status_code == 200 and inv.json()["object"] == "chat.completion"
    emb = client.post("/serving-endpoints/all-minilm-l6-v2/invocations", json={"input": ["q"]})
    assert emb.json()["data"][0]["object"] == "embedding"
    wrong = client.post(f"/serving-endpoints/{CHAT}/invocations", json={"input": "x"})
    assert wrong.status_code == 400 and "'messages'" in wrong.json()["message"]
    wrong_route = client.post("/v1/embeddings", json={"model": CHAT, "input": "x"})
    assert wrong_route.status_code == 400


def test_models_metrics_and_inference_table(client: TestClient, tmp_path: Path) -> None:
    models = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert {CHAT, "databricks-meta-llama-3-3-70b-instruct"} <= models
    ok = client.post("/v1/chat/completions", headers={"x-client-request-id": "mine-1"},
                     json={"model": CHAT, "messages": [{"role": "user", "content": "log me"}]})
    quiet = _endpoint("not-captured", "q")
    quiet["config"]["auto_capture_config"] = {"enabled": False}
    client.post("/api/2.0/serving-endpoints", json=quiet)
    _wait_ready(client, "not-captured")
    assert _chat(client, "not-captured").status_code == 200
    metrics = client.get("/metrics").text
    assert f'ai_query_requests_total{{endpoint="{CHAT}",route="chat",status="200"}}' in metrics
    assert "ai_query_tokens_total" in metrics and "ai_query_queue_depth" in metrics
    time.sleep(0.3)
    rows = duckdb.sql(
        "SELECT databricks_request_id, client_request_id, status_code, requester, request, "
        f"served_entity_id FROM read_parquet('{tmp_path}/inference/*/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()
    assert rows == [(ok.headers["x-request-id"], "mine-1", 200, "alice", json.dumps(
        {"model": CHAT, "messages": [{"role": "user", "content": "log me"}]}), CHAT)]


def test_flight_engine_sees_endpoints_made_over_http(tmp_path: Path) -> None:
    from ai_query.catalog import Catalog
    from ai_query.engine.backends.deterministic import DeterministicBackend
    from ai_query.engine.local import LocalEngine

    engine = LocalEngine(Catalog([]), backend_factory=DeterministicBackend)
    app = create_app(engine=engine, database=str(tmp_path / "db.sqlite"))
    assert app.state.ctx.serving._factory is DeterministicBackend  # the engine's backends
    assert CHAT in engine.catalog.names()  # bundled defaults are served too
    with TestClient(app) as c:
        c.post("/api/2.0/serving-endpoints", json=_endpoint("for-sql", "a",
               rate_limits=[{"calls": 5, "key": "user"}]))
        _wait_ready(c, "for-sql")
        assert engine.catalog.get("for-sql").rate_limits[0].calls == 5
        c.delete("/api/2.0/serving-endpoints/for-sql")
        assert "for-sql" not in engine.catalog.names()


def test_the_inference_table_keeps_the_cost_at_the_catalog_price(tmp_path: Path) -> None:
    from ai_query.catalog import Catalog

    catalog = Catalog.from_data({"endpoints": [{
        "name": "paid", "price": {"input_per_million": 1000.0, "output_per_million": 2000.0},
        "config": {"served_entities": [{"entity_name": CHAT}]}}]})
    options = ServeOptions(engine="deterministic", database=tmp_path / "endpoints.sqlite",
                           inference_table=tmp_path / "inference", inference_flush_seconds=0.05)
    with TestClient(create_app(options, catalog=catalog)) as c:
        answer = _chat(c, "paid").json()
        _chat(c)  # the bundled endpoint has no price
    time.sleep(0.3)
    rows = dict(duckdb.sql(
        "SELECT endpoint_name, cost FROM read_parquet("
        f"'{tmp_path}/inference/*/*.parquet', hive_partitioning = true)").fetchall())
    usage = answer["usage"]
    assert rows["paid"] == pytest.approx(
        usage["prompt_tokens"] * 0.001 + usage["completion_tokens"] * 0.002)
    assert rows[CHAT] is None
