"""A planted secret is found on no surface, through real server processes.

A tiny provider on 127.0.0.1 answers every call with a 400 whose body echoes the
``Authorization`` header it received (the API key). An external endpoint using it, its key from
``{{secrets/leak/key}}``, is called over HTTP, over Flight (DuckDB on a Flight client, with
``failOnError`` false and true) and through ``ai_query.connect(catalog=...)``'s private engine
server; then the inference table, the server's log and the SQLite files are searched for it.
Also: ``ai-query serve`` refuses a public address with auth off, and warns about ``--token``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import ai_query
from tests.serving.http_servers import HTTPServer

pytestmark = pytest.mark.slow

SECRET = "sk-leak-PLANTED-e3b0c44298fc"
QUERY = "SELECT ai_query('leaky', 'hello'{args}) AS r"


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {"error": {"message": f"invalid key: {self.headers.get('Authorization')}"}}
        ).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def echo_provider() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def leaky_catalog(tmp_path_factory: pytest.TempPathFactory, echo_provider: str) -> Path:
    path = tmp_path_factory.mktemp("leak") / "catalog.json"
    entity = {
        "name": "ext",
        "external_model": {
            "name": "echo-model",
            "provider": "openai",
            "task": "llm/v1/chat",
            "max_retries": 0,
            "openai_config": {
                "openai_api_base": echo_provider,
                "openai_api_key": "{{secrets/leak/key}}",
            },
        },
    }
    path.write_text(json.dumps([{"name": "leaky", "config": {"served_entities": [entity]}}]))
    return path


@pytest.fixture(scope="module")
def leak_server(
    tmp_path_factory: pytest.TempPathFactory, leaky_catalog: Path
) -> Iterator[HTTPServer]:
    work = tmp_path_factory.mktemp("leak-server")
    server = HTTPServer(
        work,
        "--engine",
        "deterministic",
        "--catalog",
        str(leaky_catalog),
        "--database",
        str(work / "endpoints.sqlite"),
        "--inference-table",
        str(work / "inference"),
        "--inference-flush-seconds",
        "0.2",
        env={"AI_QUERY_SECRET_LEAK_KEY": SECRET},
    ).start()
    yield server
    server.stop()


def _flight_url(server: HTTPServer) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"listening on (grpc://[0-9.]+:\d+)", server.logs())
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError("no Flight address in the server log")


def test_planted_secret_is_on_no_surface(leak_server: HTTPServer) -> None:
    # (a) HTTP, both APIs
    with leak_server.client() as c:
        invocations = c.post(
            "/serving-endpoints/leaky/invocations",
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
        openai = c.post(
            "/v1/chat/completions?token=query-string-secret",
            json={"model": "leaky", "messages": [{"role": "user", "content": "hi"}]},
        )
    for answer in (invocations, openai):
        assert answer.status_code >= 400
        assert "invalid key" in answer.text, answer.text  # the provider's error did come back
        assert SECRET not in answer.text and "[REDACTED]" in answer.text
    # (c) Flight: DuckDB on a Flight client of the server
    from ai_query.engine.flight.client import FlightEngineClient

    client = FlightEngineClient([_flight_url(leak_server)])
    con = ai_query.connect(engine=client)
    row = con.sql(QUERY.format(args=", failOnError => false")).fetchall()[0]
    assert row is not None
    message = str(row[0])
    assert "invalid key" in message and SECRET not in message and "[REDACTED]" in message
    with pytest.raises(Exception) as failed:
        con.sql(QUERY.format(args="")).fetchall()
    assert "invalid key" in str(failed.value) and SECRET not in str(failed.value)
    con.close()
    # (e) the inference table, the log, the database files
    time.sleep(1.0)  # two flushes of the inference table
    tables = list((leak_server.workdir / "inference").rglob("*.parquet"))
    assert tables
    for part in tables:
        text = json.dumps(pq.read_table(part).to_pylist(), default=str)
        assert SECRET not in text
    logs = leak_server.logs()
    assert SECRET not in logs
    assert "query-string-secret" not in logs  # access lines name paths only
    assert "/v1/chat/completions" in logs or "leaky" in logs
    for path in leak_server.workdir.glob("endpoints.sqlite*"):
        assert SECRET.encode() not in path.read_bytes()


def test_planted_secret_not_in_embedded_duckdb_errors(
    leaky_catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (b) ai_query.connect(catalog=...): the engine runs in a private `ai-query serve` child
    monkeypatch.setenv("AI_QUERY_SECRET_LEAK_KEY", SECRET)
    con = ai_query.connect(catalog=str(leaky_catalog))
    try:
        row = con.sql(QUERY.format(args=", failOnError => false")).fetchall()[0]
        assert row is not None
        message = str(row[0])
        assert "invalid key" in message and SECRET not in message, message
        with pytest.raises(Exception) as failed:
            con.sql(QUERY.format(args="")).fetchall()
        assert "invalid key" in str(failed.value) and SECRET not in str(failed.value)
    finally:
        con.close()


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("ai-query"))
    return subprocess.run(
        [exe, "serve", "--engine", "deterministic", "--preload", "none", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_public_address_without_auth_is_refused() -> None:
    done = _serve("--host", "0.0.0.0", "--http-port", "0")
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "refusing to serve on 0.0.0.0 with auth off" in lines[0]
    assert "--insecure" in lines[0]


def test_token_on_the_command_line_warns(tmp_path: Path) -> None:
    # a bad --host fails after the warning, so nothing keeps running
    done = _serve("--token", "tok-visible", "--host", "not a host", "--http-port", "0")
    assert "visible to other users" in done.stderr
    import os

    env = {**os.environ, "AI_QUERY_SERVER_TOKEN": "tok-env"}
    quiet = _serve("--host", "not a host", "--http-port", "0", env=env)
    assert "visible to other users" not in quiet.stderr


def test_mlflow_deployments_client_against_a_real_server(tmp_path: Path) -> None:
    import os

    work = tmp_path / "mlflow"
    server = HTTPServer(
        work,
        "--engine",
        "deterministic",
        "--database",
        str(work / "endpoints.sqlite"),
        env={"AI_QUERY_SERVER_TOKEN": "tok-admin"},
    ).start()
    saved = {k: os.environ.get(k) for k in ("DATABRICKS_HOST", "DATABRICKS_TOKEN")}
    os.environ.update(DATABRICKS_HOST=server.url, DATABRICKS_TOKEN="tok-admin")
    try:
        from mlflow.deployments import get_deploy_client

        client = get_deploy_client("databricks")
        chat = client.predict(
            endpoint="smollm2-135m-instruct",
            inputs={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
        )
        assert chat["choices"][0]["message"]["content"]
        emb = client.predict(endpoint="all-minilm-l6-v2", inputs={"input": ["a", "b"]})
        assert len(emb["data"]) == 2
        entity = {"name": "chat", "entity_name": "smollm2-135m-instruct", "task": "llm/v1/chat"}
        created = client.create_endpoint(name="mlflow-chat", config={"served_entities": [entity]})
        assert created["name"] == "mlflow-chat"
        assert client.get_endpoint("mlflow-chat")["name"] == "mlflow-chat"
        names = [e["name"] for e in client.list_endpoints()]
        assert "mlflow-chat" in names
        deadline = time.monotonic() + 30
        while client.get_endpoint("mlflow-chat")["state"]["config_update"] == "IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        updated = client.update_endpoint(
            endpoint="mlflow-chat", config={"served_entities": [{**entity, "name": "chat2"}]}
        )
        assert updated["name"] == "mlflow-chat"
        client.delete_endpoint("mlflow-chat")
        assert "mlflow-chat" not in [e["name"] for e in client.list_endpoints()]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
