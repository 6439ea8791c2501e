"""The web UI's routes in-process: the page and its assets ship in the package, and the two
JSON routes answer what the token's principal may see."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from ai_query.errors import SQLError, UploadRejectedError
from ai_query.serving.auth import TokenAuth
from ai_query.serving.http import create_app
from ai_query.serving.metrics import ServerMetrics
from ai_query.serving.options import ServeOptions

CHAT = "smollm2-135m-instruct"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    options = ServeOptions(engine="deterministic", database=tmp_path / "endpoints.sqlite")
    auth = TokenAuth({"tok-alice": {"principal": "alice", "groups": ["admins"],
                                    "secret_scopes": ["team"]}, "tok-bob": "bob"})
    with TestClient(create_app(options, auth=auth)) as c:
        yield c


def test_page_and_assets_are_served_without_a_token(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/ui/app.js">' in page.text
    for asset in ("/ui/app.js", "/ui/lib.js", "/ui/endpoints.js", "/ui/query.js", "/ui/sql.js",
                  "/ui/jobs.js", "/ui/app.css"):
        assert client.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # no CDN


def test_me_needs_a_token_and_says_what_it_may_do(client: TestClient) -> None:
    assert client.get("/api/ui/me").status_code == 401
    alice = client.get("/api/ui/me", headers={"Authorization": "Bearer tok-alice"}).json()
    assert alice == {"name": "alice", "auth": True, "groups": ["admins", "users"],
                     "is_admin": True, "may_create": True, "secret_scopes": ["team"],
                     "sql_editor": False, "jobs": False}
    bob = client.get("/api/ui/me", headers={"Authorization": "Bearer tok-bob"}).json()
    assert (bob["name"], bob["may_create"]) == ("bob", False)


def test_me_answers_the_local_admin_without_a_token_when_auth_is_off(tmp_path: Path) -> None:
    options = ServeOptions(engine="deterministic", database=tmp_path / "endpoints.sqlite")
    with TestClient(create_app(options, auth=TokenAuth())) as c:
        me = c.get("/api/ui/me")
    assert me.status_code == 200
    assert me.json()["auth"] is False
    assert (me.json()["name"], me.json()["is_admin"]) == ("anonymous", True)


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


class _EchoWorkspace:
    """Keeps uploads in memory and answers every query with the caller's tables and token (the
    seam the launcher fills; the real workspace is tested in ``test_sql_sandbox.py``)."""

    max_upload_bytes = 1024

    def __init__(self) -> None:
        self.uploads: dict[str, dict[str, bytes]] = {}

    def tables(self, principal: str) -> list[dict[str, Any]]:
        return [{"name": n, "format": "csv", "bytes": len(d), "rows": 1, "columns": 1}
                for n, d in sorted(self.uploads.get(principal, {}).items())]

    def upload(self, principal: str, name: str, fmt: str, data: bytes, *,
               vector_index: Any = None, token: str | None = None) -> list[dict[str, Any]]:
        if vector_index is not None:
            raise UploadRejectedError("this workspace builds no vector index")
        if fmt != "csv":
            raise UploadRejectedError(f"format must be csv or parquet, not {fmt!r}")
        self.uploads.setdefault(principal, {})[name] = data
        return self.tables(principal)

    def delete(self, principal: str, name: str) -> list[dict[str, Any]]:
        self.uploads.get(principal, {}).pop(name)
        return self.tables(principal)

    def run(self, principal: str, sql: str, token: str | None, progress: Any) -> pa.Table:
        tables = sorted(self.uploads.get(principal, {}))
        progress(len(tables))
        if sql == "boom":
            raise SQLError("Parser Error: boom")
        if sql == "bug":
            raise RuntimeError("a bug with a secret inside")
        return pa.table({"table": tables, "token": [token] * len(tables)})

    def close(self) -> None:
        self.uploads.clear()


def test_sql_editor_is_off_without_a_workspace(client: TestClient) -> None:
    answer = client.get("/api/ui/sql/tables", headers={"Authorization": "Bearer tok-alice"})
    assert answer.status_code == 404
    me = client.get("/api/ui/me", headers={"Authorization": "Bearer tok-alice"}).json()
    assert me["sql_editor"] is False


def test_sql_editor_uploads_runs_and_downloads(tmp_path: Path) -> None:
    options = ServeOptions(engine="deterministic", database=tmp_path / "endpoints.sqlite")
    auth = TokenAuth({"tok-bob": "bob"})
    bob = {"Authorization": "Bearer tok-bob"}
    with TestClient(create_app(options, auth=auth, sql_workspace=_EchoWorkspace())) as c:
        csv = base64.b64encode(b"id\n1\n").decode()
        assert c.post("/api/ui/sql/tables/docs", headers=bob,
                      json={"format": "csv", "data_base64": csv}).status_code == 200
        for name, body, status in [
            ("t", {"format": "xlsx", "data_base64": csv}, 400),
            ("t", {"format": "csv", "data_base64": "%%%"}, 400),
            ("t", {"format": "csv", "data_base64": base64.b64encode(
                b"x" * 1025).decode()}, 413),
        ]:
            assert c.post(f"/api/ui/sql/tables/{name}", headers=bob, json=body).status_code == status
        lines = [json.loads(x) for x in c.post(
            "/api/ui/sql/query", headers=bob, json={"sql": "select"}).text.splitlines()]
        assert lines[-1] == {"rows_answered": 1, "columns": ["table", "token"],
                             "rows": [["docs", "tok-bob"]], "row_count": 1}
        assert c.get("/api/ui/sql/result.csv", headers=bob).text.splitlines()[1] == '"docs","tok-bob"'
        parquet = c.get("/api/ui/sql/result.parquet", headers=bob).content
        assert pq.read_table(io.BytesIO(parquet)).column_names == ["table", "token"]
        failed = c.post("/api/ui/sql/query", headers=bob, json={"sql": "boom"}).text.splitlines()
        assert json.loads(failed[-1]) == {"error": "Parser Error: boom"}
        bug = json.loads(c.post("/api/ui/sql/query", headers=bob, json={"sql": "bug"}).text
                         .splitlines()[-1])
        assert bug["error"].startswith("internal error (request id ") and "secret" not in bug["error"]
        assert c.delete("/api/ui/sql/tables/docs", headers=bob).json() == {"tables": []}
        assert c.post("/api/ui/sql/query", headers=bob, json={"sql": ""}).status_code == 400


def test_sql_editor_is_for_principals_with_query_rights(tmp_path: Path) -> None:
    options = ServeOptions(engine="deterministic", database=tmp_path / "endpoints.sqlite")
    auth = TokenAuth({"tok-alice": {"principal": "alice", "groups": ["admins"]}, "tok-bob": "bob"})
    alice = {"Authorization": "Bearer tok-alice"}
    with TestClient(create_app(options, auth=auth, sql_workspace=_EchoWorkspace())) as c:
        # Take CAN_QUERY away from ``users`` on every endpoint: bob may view, not query.
        for record in c.get("/api/2.0/serving-endpoints", headers=alice).json()["endpoints"]:
            answer = c.put(f"/api/2.0/permissions/serving-endpoints/{record['id']}", headers=alice,
                           json={"access_control_list": [
                               {"group_name": "users", "permission_level": "CAN_VIEW"}]})
            assert answer.status_code == 200, answer.text
        refused = c.get("/api/ui/sql/tables", headers={"Authorization": "Bearer tok-bob"})
        assert refused.status_code == 403 and "may query no endpoint" in refused.text
        assert c.get("/api/ui/sql/tables", headers=alice).status_code == 200


def test_jobs_page_needs_a_jobs_directory(tmp_path: Path) -> None:
    options = ServeOptions(engine="deterministic", database=tmp_path / "endpoints.sqlite")
    auth = TokenAuth({"tok-bob": "bob", "tok-erin": {"principal": "erin", "groups": ["jobs"]}})
    bob, erin = {"Authorization": "Bearer tok-bob"}, {"Authorization": "Bearer tok-erin"}
    with TestClient(create_app(options, auth=auth)) as c:
        assert c.get("/api/ui/jobs", headers=erin).status_code == 404
    runs = [{"file": "a.toml", "job": "a", "runs": []}]
    with TestClient(create_app(options, auth=auth, job_runs=lambda: runs)) as c:
        assert c.get("/api/ui/jobs", headers=erin).json() == {"jobs": runs}
        assert c.get("/api/ui/me", headers=erin).json()["jobs"] is True
        assert c.get("/api/ui/jobs", headers=bob).status_code == 403  # a query-only user
        assert c.get("/api/ui/me", headers=bob).json()["jobs"] is False
        assert c.get("/api/ui/jobs").status_code == 401
