"""Errors that tell the truth after faults, as users reach them: a body over the limit is
``REQUEST_TOO_LARGE``; a ``returnType`` nested too deep is one clear error before any row runs;
an engine past its restart limit is FAILED in every answer (HTTP, Flight, the SQL editor), with
what brings it back, and its restarts wait the 1, 2, 4 s the README states (the last two through
``ai-query serve``: slow)."""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ai_query.serving.auth import TokenAuth
from ai_query.serving.http.app import create_app
from ai_query.serving.http.problems import APIError
from ai_query.serving.options import ServeOptions
from ai_query.sql.types import MAX_TYPE_DEPTH
from tests.processes import engine_cores
from tests.servers import free_port, start, stop, wait_http

CHAT = "smollm2-135m-instruct"
AI_QUERY = str(Path(sys.executable).with_name("ai-query"))
QUERY_TOKEN = "tok-query-5Hs1"
TOKENS = {"tok-admin-2Lq8": {"principal": "admin", "groups": ["admins"]}, QUERY_TOKEN: "qa"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    options = ServeOptions(
        engine="deterministic", database=tmp_path / "endpoints.sqlite", max_body_bytes=4096
    )
    app = create_app(options, auth=TokenAuth({QUERY_TOKEN: "qa"}))
    with TestClient(
        app, headers={"Authorization": f"Bearer {QUERY_TOKEN}"}, raise_server_exceptions=False
    ) as c:
        yield c


def _chat(content: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4}


def test_a_body_over_the_limit_answers_request_too_large(client: TestClient) -> None:
    big = json.dumps({"model": CHAT, **_chat("x" * 5000)})
    databricks = client.post(f"/serving-endpoints/{CHAT}/invocations", content=big, headers=JSON)
    assert databricks.status_code == 413
    assert databricks.json() == {
        "error_code": "REQUEST_TOO_LARGE",
        "message": "the request body is larger than 4096 bytes",
    }
    openai = client.post("/v1/chat/completions", content=big, headers=JSON)
    assert openai.status_code == 413
    assert openai.json()["error"] == {
        "message": "the request body is larger than 4096 bytes",
        "type": "invalid_request_error",
        "param": None,
        "code": "REQUEST_TOO_LARGE",
    }


def test_no_client_error_answers_internal_error(client: TestClient) -> None:
    unsupported = client.post(
        "/v1/chat/completions", content="hi", headers={"Content-Type": "text/plain"}
    )
    assert unsupported.status_code == 415
    assert unsupported.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    wrong_method = client.get(f"/serving-endpoints/{CHAT}/invocations")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error_code"] == "BAD_REQUEST"
    assert [s for s in range(400, 500) if APIError(s, "x").code == "INTERNAL_ERROR"] == []
    assert APIError(500, "x").code == "INTERNAL_ERROR"


# --- through `ai-query serve` -------------------------------------------------------------------


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    flight_port, http_port = free_port(), free_port()
    proc = start([AI_QUERY, "serve", "--port", str(flight_port), "--http-port", str(http_port),
                  "--tokens-file", str(tmp_path / "tokens.json"),
                  "--database", str(tmp_path / "endpoints.sqlite"), *args],
                 tmp_path / "serve.log", env=env)
    return {"proc": proc, "http": f"http://127.0.0.1:{http_port}",
            "flight": f"grpc://127.0.0.1:{flight_port}"}


def _editor(c: httpx.Client, sql: str) -> dict[str, Any]:
    answer = c.post("/api/ui/sql/query", json={"sql": sql})
    assert answer.status_code == 200, answer.text
    last: dict[str, Any] = json.loads(answer.text.splitlines()[-1])
    return last


@pytest.mark.slow
def test_a_deeply_nested_return_type_is_one_clear_error_from_the_sql_editor(
    tmp_path: Path,
) -> None:
    server = _serve(tmp_path, "--engine", "deterministic")
    deep = "ARRAY<" * 200 + "STRING" + ">" * 200
    deep_struct = "STRUCT<a: " * 200 + "INT" + ">" * 200
    try:
        wait_http(f"{server['http']}/health", server["proc"], timeout=120)
        headers = {"Authorization": f"Bearer {QUERY_TOKEN}"}
        with httpx.Client(base_url=server["http"], headers=headers, timeout=120) as c:
            for ddl, kind in ((deep, "returnType"), (deep_struct, "returnType"),
                              (deep_struct, "responseFormat")):
                failed = _editor(c, f"SELECT ai_query('{CHAT}', 'row ' || range, {kind} => '{ddl}',"
                                    " failOnError => false) AS r FROM range(3)")
                assert set(failed) == {"error"}, failed
                assert (f"bad {kind}: its ARRAY, STRUCT and MAP types nest 200 levels deep; "
                        f"at most {MAX_TYPE_DEPTH} are supported") in failed["error"]
                assert "ArrowInvalid" not in failed["error"]
            fits = "STRUCT<a: " * MAX_TYPE_DEPTH + "INT" + ">" * MAX_TYPE_DEPTH
            ok = _editor(c, f"SELECT ai_query('{CHAT}', 'hi', returnType => 'STRUCT<a: INT>') AS r,"
                            f" typeof(ai_query('{CHAT}', 'hi', returnType => '{fits}')) AS t")
            assert ok.get("row_count") == 1, ok
            over = base64.b64encode(b"a\n" + b"1\n" * (4 * 1024 * 1024 + 1)).decode()
            upload = c.post("/api/ui/sql/tables/big", json={"format": "csv", "data_base64": over})
            assert upload.status_code == 413, upload.text
            assert upload.json()["error_code"] == "REQUEST_TOO_LARGE"
    finally:
        stop(server["proc"])


def _health(base: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"{base}/health", timeout=10)
    return answer.status_code, answer.json()


def _wait_state(base: str, states: set[str], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = _health(base)
        if status == 503 and body["engines"][CHAT]["state"] in states:
            return body
        assert time.monotonic() < deadline, f"health still says {status} {body}"
        time.sleep(0.2)


def _build_starts(timings: Path, after: float) -> list[float]:
    marks = [json.loads(line) for line in timings.read_text().splitlines()]
    return [m["t"] for m in marks if m["step"] == "engine: build start" and m["t"] >= after]


@pytest.mark.slow
def test_an_engine_past_its_restart_limit_is_failed_in_every_answer(tmp_path: Path) -> None:
    from ai_query.engine.core.batch import request_batch
    from ai_query.engine.flight.client import FlightEngineClient
    from ai_query.errors import EngineDeadError
    from ai_query.options import CallOptions, ModelParameters

    timings = tmp_path / "timings"
    server = _serve(tmp_path, "--preload", CHAT, env={"AI_QUERY_TIMINGS": str(timings)})
    proc, base = server["proc"], server["http"]
    headers = {"Authorization": f"Bearer {QUERY_TOKEN}"}
    flight = FlightEngineClient(server["flight"], token=QUERY_TOKEN, max_attempts=1)
    try:
        wait_http(f"{base}/health", proc, timeout=400)
        with httpx.Client(base_url=base, headers=headers, timeout=300) as c:
            for wait in (1.0, 2.0, 4.0):  # the default policy: 3 restarts within 5 minutes
                os.kill(engine_cores(proc.pid)[0], signal.SIGKILL)
                _wait_state(base, {"DEAD"})
                asked = time.time()
                answer = c.post(f"/serving-endpoints/{CHAT}/invocations", json=_chat("hi"))
                assert answer.status_code == 200, answer.text
                # The README's waits, from the request that restarts it to the engine's build
                # (vLLM's own start-up follows).
                [began] = _build_starts(timings, asked)
                assert wait <= began - asked < wait + 2.0, (wait, began - asked)
            os.kill(engine_cores(proc.pid)[0], signal.SIGKILL)
            health = _wait_state(base, {"FAILED"})  # at once, before any request
            assert health["endpoints"][CHAT] == "NOT_READY"
            deployment = c.get(f"/api/2.0/serving-endpoints/{CHAT}").json()
            assert deployment["config"]["served_entities"][0]["state"]["deployment"] == (
                "DEPLOYMENT_FAILED")

            failed = (
                f"the vLLM engine for {CHAT} is FAILED: it died 4 times within 300 s (last cause: its "
                "EngineCore process exited) and is not restarted again; restart the engine "
                f"server (ai-query serve, pid {proc.pid}) to bring it back"
            )
            for _ in range(2):  # every later request, not only the first
                databricks = c.post(f"/serving-endpoints/{CHAT}/invocations", json=_chat("hi"))
                assert databricks.status_code == 503
                assert databricks.json()["message"] == failed
                openai = c.post("/v1/chat/completions", json={"model": CHAT, **_chat("hi")})
                assert openai.status_code == 503
                assert openai.json()["error"]["message"] == failed
            with pytest.raises(EngineDeadError) as info:
                flight.run(request_batch(["hi"], CallOptions(
                    endpoint=CHAT, model_parameters=ModelParameters(max_tokens=4))))
            assert str(info.value) == failed
            editor = _editor(c, f"SELECT ai_query('{CHAT}', 'hi') AS a")
            assert failed in editor["error"], editor
            for text in (databricks.text, openai.text, str(info.value), editor["error"]):
                assert "next request" not in text and "stack trace" not in text
            assert engine_cores(proc.pid) == [], "a FAILED engine is not started again"
    finally:
        flight.close()
        stop(proc)
