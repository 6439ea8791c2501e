"""The web UI's routes in-process: the page and its assets ship in the package, and the two
JSON routes answer what the token's principal may see."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ai_query.serving.auth import TokenAuth
from ai_query.serving.http import HTTPOptions, create_app
from ai_query.serving.metrics import ServerMetrics

CHAT = "smollm2-135m-instruct"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    options = HTTPOptions(engine="deterministic", database=tmp_path / "endpoints.sqlite")
    auth = TokenAuth({"tok-alice": {"principal": "alice", "groups": ["admins"],
                                    "secret_scopes": ["team"]}, "tok-bob": "bob"})
    with TestClient(create_app(options, auth=auth)) as c:
        yield c


def test_page_and_assets_are_served_without_a_token(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/ui/app.js">' in page.text
    for asset in ("/ui/app.js", "/ui/app.css"):
        assert client.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # no CDN


def test_me_needs_a_token_and_says_what_it_may_do(client: TestClient) -> None:
    assert client.get("/api/ui/me").status_code == 401
    alice = client.get("/api/ui/me", headers={"Authorization": "Bearer tok-alice"}).json()
    assert alice == {"name": "alice", "groups": ["admins", "users"], "is_admin": True,
                     "may_create": True, "secret_scopes": ["team"]}
    bob = client.get("/api/ui/me", headers={"Authorization": "Bearer tok-bob"}).json()
    assert (bob["name"], bob["may_create"]) == ("bob", False)


def test_metrics_summary_counts_requests_for_viewers_only(client: TestClient) -> None:
    bob = {"Authorization": "Bearer tok-bob"}
    answer = client.post("/v1/chat/completions", headers=bob, json={
        "model": CHAT, "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200
    data = client.get(f"/api/ui/metrics/{CHAT}", headers=bob).json()
    assert sum(data["requests"].values()) == 1 and data["tokens"]["completion"] > 0
    assert data["latency"]["count"] == 1
    assert client.get("/api/ui/metrics/nope", headers=bob).status_code == 404
    assert client.get(f"/api/ui/metrics/{CHAT}").status_code == 401


def test_summary_leaves_out_the_infinite_bucket() -> None:
    metrics = ServerMetrics()
    metrics.observe("a", "chat", 200, 0.03)
    metrics.observe("a", "chat", 500, 0.2)
    summary = metrics.summary("a")
    assert summary["requests"] == {"200": 1.0, "500": 1.0}
    assert summary["latency"]["count"] == 2
    assert all(le != float("inf") for le, _ in summary["latency"]["buckets"])
    assert metrics.summary("b")["requests"] == {}
