"""The HTTP server as a process on the deterministic backend, through the real ``openai``
client and plain HTTP: auth, traffic split, rate limits, external models and secrets,
restarts, inference table."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import openai
import pytest

from tests.serving.http_servers import PROVIDER_SECRET, HTTPServer

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"


def _oai(server: HTTPServer, token: str | None = "tok-alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=token or "", max_retries=0)


def _create(server: HTTPServer, body: dict[str, Any], token: str = "tok-alice") -> dict[str, Any]:
    with server.client(token) as c:
        answer = c.post("/api/2.0/serving-endpoints", json=body)
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            data = c.get(f"/api/2.0/serving-endpoints/{body['name']}").json()
            if data["state"]["config_update"] != "IN_PROGRESS":
                assert data["state"]["ready"] == "READY", data
                return dict(data)
            time.sleep(0.05)
    raise TimeoutError(body["name"])


def _chat_endpoint(name: str, *entities: str, routes: dict[str, int] | None = None,
                   **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"served_entities": [
        {"name": e, "entity_name": f"model-{e}", "task": "llm/v1/chat"} for e in entities]}
    if routes:
        config["traffic_config"] = {"routes": [
            {"served_model_name": n, "traffic_percentage": p} for n, p in routes.items()]}
    return {"name": name, "config": config, **extra}


def test_openai_client_unchanged(det_server: HTTPServer) -> None:
    client = _oai(det_server)
    answer = client.chat.completions.create(
        model=CHAT, messages=[{"role": "system", "content": "be brief"},
                              {"role": "user", "content": "hello world"}])
    assert answer.choices[0].message.content == f"{CHAT} says: hello world"
    assert answer.usage is not None and answer.usage.total_tokens > 0
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "a b c"}], stream=True) if c.choices]
    assert "".join(pieces) == f"{CHAT} says: a b c" and len(pieces) > 3
    vectors = client.embeddings.create(model="databricks-gte-large-en", input=["x", "y"])
    assert [len(d.embedding) for d in vectors.data] == [384, 384]
    assert CHAT in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_401_without_a_valid_token(det_server: HTTPServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        _oai(det_server, "wrong").chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "x"}])
    for token in (None, "wrong"):
        with det_server.client(token) as c:
            assert c.get("/api/2.0/serving-endpoints").status_code == 401
            assert c.post(f"/serving-endpoints/{CHAT}/invocations",
                          json={"messages": []}).status_code == 401
            assert c.get("/health").status_code == 200


def test_traffic_split_over_1000_requests(det_server: HTTPServer) -> None:
    _create(det_server, _chat_endpoint("ab-test", "blue", "green",
                                       routes={"blue": 70, "green": 30}))
    body = {"model": "ab-test", "messages": [{"role": "user", "content": "which?"}]}
    with det_server.client("tok-alice") as c, ThreadPoolExecutor(8) as pool:
        served = list(pool.map(
            lambda _: c.post("/v1/chat/completions", json=body).json()["model"], range(1000)))
    counts = Counter(served)
    assert set(counts) == {"blue", "green"}
    assert abs(counts["blue"] / 1000 - 0.70) < 0.05, counts


def test_rate_limit_429_then_success_after_the_window(det_server: HTTPServer) -> None:
    # The server's "minute" lasts 2 s (--rate-limit-period-scale).
    _create(det_server, _chat_endpoint(
        "limited", "a", rate_limits=[{"calls": 3, "key": "user", "renewal_period": "minute"}]))
    alice = _oai(det_server)
    ask = {"model": "limited", "messages": [{"role": "user", "content": "x"}]}
    for _ in range(3):
        alice.chat.completions.create(**ask)
    with pytest.raises(openai.RateLimitError) as info:
        alice.chat.completions.create(**ask)
    retry_after = float(info.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 2
    with det_server.client("tok-alice") as c:  # alice made it: bob needs a grant to query it
        assert c.patch("/api/2.0/permissions/serving-endpoints/limited", json={
            "access_control_list": [{"user_name": "bob", "permission_level": "CAN_QUERY"}],
        }).status_code == 200
    _oai(det_server, "tok-bob").chat.completions.create(**ask)  # per user: bob is not limited
    time.sleep(retry_after)
    assert alice.chat.completions.create(**ask).choices[0].message.content
    with det_server.client("tok-alice") as c:
        assert 'ai_query_rate_limited_total{endpoint="limited"} 1.0' in c.get("/metrics").text


def test_external_model_forwards_with_the_secret_and_never_shows_it(
    det_server: HTTPServer, provider_server: HTTPServer
) -> None:
    external = {"name": CHAT, "provider": "openai", "task": "llm/v1/chat",
                "openai_config": {"openai_api_base": f"{provider_server.url}/v1",
                                  "openai_api_key": "{{secrets/provider/key}}"}}
    created = _create(det_server, {"name": "ext-chat", "config": {"served_entities": [
        {"name": "provider-model", "external_model": external}]}})
    assert created["config"]["served_entities"][0]["external_model"]["openai_config"][
        "openai_api_key"] == "{{secrets/provider/key}}"
    client = _oai(det_server)
    answer = client.chat.completions.create(
        model="ext-chat", messages=[{"role": "user", "content": "forward me"}])
    assert answer.choices[0].message.content == f"{CHAT} says: forward me"  # the provider's
    assert answer.model == "provider-model"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="ext-chat", messages=[{"role": "user", "content": "and stream"}], stream=True)
        if c.choices)
    assert streamed == f"{CHAT} says: and stream"

    wrong_key = {**external, "openai_config": {"openai_api_base": f"{provider_server.url}/v1",
                                               "openai_api_key_plaintext": "sk-plain-SECRET-77"}}
    shown = _create(det_server, {"name": "ext-wrong-key", "config": {"served_entities": [
        {"external_model": {**wrong_key, "max_retries": 0}}]}})
    refused = det_server.client("tok-alice").post("/v1/chat/completions", json={
        "model": "ext-wrong-key", "messages": [{"role": "user", "content": "x"}]})
    assert refused.status_code == 502, refused.text

    time.sleep(0.6)  # the inference table flushes every 0.2 s
    with det_server.client("tok-alice") as c:
        listed = c.get("/api/2.0/serving-endpoints").text
    table = duckdb.sql(
        f"SELECT string_agg(request || response, '') FROM read_parquet("
        f"'{det_server.workdir}/inference/*/*.parquet', hive_partitioning = true)").fetchall()[0]
    for secret in (PROVIDER_SECRET, "sk-plain-SECRET-77"):
        for text in (json.dumps(created), json.dumps(shown), listed, refused.text,
                     det_server.logs(), table[0]):
            assert secret not in text


class _GarbageProvider(http.server.BaseHTTPRequestHandler):
    """A "provider" that answers every call 200 with a JSON body no OpenAI API returns."""

    def do_POST(self) -> None:  # http.server calls it by this name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_provider_answer_our_code_cannot_handle_is_a_500_with_a_request_id(
    det_server: HTTPServer,
) -> None:
    garbage = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GarbageProvider)
    threading.Thread(target=garbage.serve_forever, daemon=True).start()
    try:
        external = {"name": "odd-model", "provider": "openai", "task": "llm/v1/chat",
                    "max_retries": 0, "openai_config": {
                        "openai_api_base": f"http://127.0.0.1:{garbage.server_port}/v1",
                        "openai_api_key_plaintext": "sk-garbage-provider-1"}}
        _create(det_server, {"name": "ext-garbage", "config": {"served_entities": [
            {"name": "odd", "external_model": external}]}})
        answer = det_server.client("tok-alice").post("/v1/chat/completions", json={
            "model": "ext-garbage", "messages": [{"role": "user", "content": "x"}]})
    finally:
        garbage.shutdown()
    assert answer.status_code == 500, answer.text  # a bug of ours, not the provider's (502)
    request_id = answer.headers["x-request-id"]
    assert answer.json()["error"]["message"] == f"internal error (request id {request_id})"
    assert request_id in det_server.logs()  # the traceback is logged under the same id


def test_inference_table_rows_match_requests(det_server: HTTPServer) -> None:
    made = {}
    with det_server.client("tok-bob") as c:
        for i in range(5):
            r = c.post(f"/serving-endpoints/{CHAT}/invocations",
                       headers={"x-client-request-id": f"job-{i}"},
                       json={"messages": [{"role": "user", "content": f"row {i}"}]})
            made[r.headers["x-request-id"]] = (f"job-{i}", r.json())
        refused = c.post("/v1/chat/completions", json={"model": CHAT, "n": 99, "messages": [
            {"role": "user", "content": "too many"}]})
        made[refused.headers["x-request-id"]] = (None, refused.json())
    time.sleep(0.6)
    ids = "', '".join(made)
    rows = duckdb.sql(
        "SELECT databricks_request_id, client_request_id, status_code, requester, response, "
        "input_token_count, output_token_count, execution_duration_ms, request_date "
        f"FROM read_parquet('{det_server.workdir}/inference/*/*.parquet', "
        f"hive_partitioning = true) WHERE databricks_request_id IN ('{ids}')").fetchall()
    assert len(rows) == 6
    for rid, client_id, status, requester, response, tokens_in, tokens_out, ms, day in rows:
        expected_client, body = made[rid]
        assert (client_id, requester) == (expected_client, "bob")
        assert ms >= 0 and day is not None
        if status == 200:
            assert json.loads(response) == body
            assert (tokens_in, tokens_out) == (body["usage"]["prompt_tokens"],
                                               body["usage"]["completion_tokens"])
        else:
            assert status == 400 and "n" in json.loads(response)["message"]


def test_endpoints_survive_a_restart(tmp_path: Path) -> None:
    server = HTTPServer(tmp_path, "--engine", "deterministic",
                        "--database", str(tmp_path / "endpoints.sqlite")).start()
    try:
        before = _create(server, _chat_endpoint("durable", "a", tags=[{"key": "k", "value": "v"}]))
        with server.client() as c:
            c.put("/api/2.0/serving-endpoints/durable/rate-limits",
                  json={"rate_limits": [{"calls": 10, "key": "endpoint"}]})
            c.put(f"/api/2.0/serving-endpoints/{CHAT}/rate-limits",
                  json={"rate_limits": [{"calls": 5, "key": "user"}]})
            c.post("/api/2.0/serving-endpoints", json=_chat_endpoint("gone", "z"))
            c.delete("/api/2.0/serving-endpoints/gone")
        server.stop()
        server.start()
        with server.client() as c:
            after = c.get("/api/2.0/serving-endpoints/durable").json()
            assert c.get("/api/2.0/serving-endpoints/gone").status_code == 404
            bundled = c.get(f"/api/2.0/serving-endpoints/{CHAT}").json()
            answer = c.post("/v1/chat/completions", json={
                "model": "durable", "messages": [{"role": "user", "content": "still here"}]})
        for key in ("id", "creator", "creation_timestamp", "tags"):
            assert after[key] == before[key]
        assert after["config"]["config_version"] == 1 and after["state"]["ready"] == "READY"
        assert after["rate_limits"] == [{"calls": 10, "key": "endpoint",
                                         "renewal_period": "minute"}]
        assert bundled["rate_limits"][0]["calls"] == 5
        assert answer.json()["choices"][0]["message"]["content"] == "a says: still here"
    finally:
        server.stop()


def test_http_beside_flight_in_one_process(tmp_path: Path) -> None:
    """``ai-query serve``'s process: endpoints created over HTTP are queryable from SQL's
    Flight path, with the same bearer tokens."""
    import sys

    import pyarrow as pa

    from ai_query.engine.core.batch import align_results, request_batch
    from ai_query.engine.flight.client import FlightEngineClient
    from ai_query.errors import AIQueryError
    from ai_query.options import CallOptions
    from tests.servers import free_port, start, stop, wait_http

    (tmp_path / "tokens.json").write_text(
        json.dumps({"tok-sql": {"principal": "etl", "groups": ["can_create_endpoints"]}}))
    flight_port, http_port = free_port(), free_port()
    proc = start([sys.executable, "-m", "ai_query", "serve", "--engine",
                  "deterministic", "--port", str(flight_port), "--http-port", str(http_port),
                  "--tokens-file", str(tmp_path / "tokens.json"),
                  "--database", str(tmp_path / "endpoints.sqlite")], tmp_path / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{http_port}/health", proc, timeout=120)
        http = HTTPServer(tmp_path / "http")
        http.port = http_port
        _create(http, _chat_endpoint("made-over-http", "a"), token="tok-sql")
        client = FlightEngineClient(f"grpc://127.0.0.1:{flight_port}", token="tok-sql")
        batch = request_batch(["from sql", None], CallOptions(endpoint="made-over-http"))
        out = align_results(client.run(batch), 2)
        assert out.column("result").to_pylist() == ["a says: from sql", None]
        assert out.schema.field("result").type == pa.string()
        client.close()
        with pytest.raises(AIQueryError):
            FlightEngineClient(f"grpc://127.0.0.1:{flight_port}", token="wrong",
                               max_attempts=1).run(batch)
    finally:
        stop(proc)
