"""Browser security headers on every response of the app: the page, its assets, API answers,
errors (the guard's refusals and unexpected 500s included) and streamed answers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ai_query.serving.auth import TokenAuth
from ai_query.serving.http import create_app
from ai_query.serving.http.headers import SECURITY_HEADERS
from ai_query.serving.options import ServeOptions

CHAT = "smollm2-135m-instruct"
ALICE = {"Authorization": "Bearer tok-alice"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    options = ServeOptions(engine="deterministic", database=tmp_path / "endpoints.sqlite",
                          max_body_bytes=4096)
    app = create_app(options, auth=TokenAuth({"tok-alice": {"principal": "alice",
                                                            "groups": ["admins"]}}))

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _assert_secured(headers: Mapping[str, str]) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name


def test_the_policy_is_strict() -> None:
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'",
                      "object-src 'none'", "base-uri 'none'"):
        assert directive in csp
    assert "unsafe" not in csp
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    pytest.param("GET", "/", {}, 200, id="page"),
    pytest.param("GET", "/ui/app.js", {}, 200, id="script"),
    pytest.param("GET", "/ui/app.css", {}, 200, id="stylesheet"),
    pytest.param("GET", "/ui/missing.js", {}, 404, id="missing-asset"),
    pytest.param("GET", "/api/ui/me", {"headers": ALICE}, 200, id="api-json"),
    pytest.param("GET", "/api/2.0/serving-endpoints", {"headers": ALICE}, 200, id="management"),
    pytest.param("GET", "/api/ui/me", {}, 401, id="unauthenticated"),
    pytest.param("GET", "/nope", {}, 404, id="not-found"),
    pytest.param("GET", "/health", {}, 200, id="health"),
    pytest.param("POST", "/v1/chat/completions", {"headers": ALICE, "content": b"x" * 5000},
                 413, id="guard-refusal"),
    pytest.param("POST", "/v1/chat/completions", {"headers": ALICE, "json": {"model": CHAT}},
                 400, id="bad-request"),
    pytest.param("GET", "/boom", {}, 500, id="unexpected-error"),
])
def test_every_response_carries_the_headers(
    client: TestClient, method: str, path: str, kwargs: dict[str, object], status: int
) -> None:
    resp = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert resp.status_code == status, resp.text
    _assert_secured(resp.headers)
    assert len(resp.headers.get_list("Content-Security-Policy")) == 1


def test_an_unexpected_error_is_the_apps_own_500(client: TestClient) -> None:
    resp = client.get("/boom")
    assert resp.json()["message"].startswith("internal error (request id ")
    assert "a bug" not in resp.text
    assert resp.headers["x-request-id"] in resp.json()["message"]


def test_a_streamed_answer_streams_whole_with_the_headers(client: TestClient) -> None:
    body = {"model": CHAT, "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    with client.stream("POST", "/v1/chat/completions", headers=ALICE, json=body) as resp:
        assert resp.status_code == 200
        _assert_secured(resp.headers)
        events = [line for line in resp.iter_lines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]"
    assert len(events) > 2
