"""Secrets never leave, requests fit for the open network: the fast, in-process checks.

The redaction boundary (ai_query.redaction) at each point where text leaves the engine, the
request guard (413/415/deep JSON), unexpected errors as 500s with a request id, and the
endpoint database's file modes and plain-text keys. The end-to-end checks with real server
processes are in test_secrets_surfaces.py.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from ai_query import errors
from ai_query.engine.core.batch import RowOutcome, result_batch
from ai_query.engine.flight.wire import error_from_flight, error_to_flight
from ai_query.errors import EngineError
from ai_query.redaction import MASK, redact, remember_secret
from ai_query.secrets import resolve_secret
from ai_query.serving.auth import TokenAuth
from ai_query.serving.http import create_app
from ai_query.serving.http.guard import json_depth
from ai_query.serving.options import ServeOptions

SECRET = "sk-hardening-unit-7c2e51"
PLAIN_KEY = "sk-plaintext-at-create-9a7b3f"


def test_resolved_secrets_are_masked_in_row_errors_and_flight_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI_QUERY_SECRET_UNIT_KEY", SECRET)
    assert resolve_secret("{{secrets/unit/key}}") == SECRET
    batch = result_batch(
        [RowOutcome(error=f"HTTP 400: bad key Bearer {SECRET}"), RowOutcome(value="ok")],
        pa.string(),
    )
    errors = batch.column("error").to_pylist()
    assert errors == [f"HTTP 400: bad key Bearer {MASK}", None]
    wire = error_to_flight(EngineError(f"provider said {SECRET}"))
    assert SECRET not in str(wire)
    assert SECRET not in (wire.extra_info or b"").decode()
    back = error_from_flight(wire)
    assert back is not None and SECRET not in str(back) and MASK in str(back)
    wrapped = error_to_flight(RuntimeError(f"boom {SECRET}"))
    assert SECRET not in str(wrapped)


def test_plaintext_key_is_remembered_when_parsed_and_json_escapes_too() -> None:
    from ai_query.catalog import OpenAIConfig

    OpenAIConfig(openai_api_key_plaintext='sk-"quoted"-key-1234')
    assert redact('key sk-"quoted"-key-1234') == f"key {MASK}"
    assert redact(json.dumps({"k": 'sk-"quoted"-key-1234'})) == json.dumps({"k": MASK})
    remember_secret("ab")  # too short to mask safely
    assert redact("ab cd") == "ab cd"


def test_json_depth_scans_without_recursion() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[["}]}') == 3
    assert json_depth(b'"just a string with { and ["') == 0
    assert json_depth(b'{"escaped": "quote \\" then [ bracket"}') == 1
    assert json_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000


# ---- the app in-process ------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    options = ServeOptions(
        engine="deterministic", database=tmp_path / "endpoints.sqlite", max_body_bytes=4096
    )
    auth = TokenAuth({"tok-admin": {"principal": "root", "groups": ["admins"]}})
    app = create_app(options, auth=auth)

    @app.get("/test/boom")
    async def boom() -> None:  # a route that fails in a way no domain error describes
        raise KeyError(f"internal detail {SECRET}")

    with TestClient(
        app, headers={"Authorization": "Bearer tok-admin"}, raise_server_exceptions=False
    ) as c:
        yield c


def _chat(content: str) -> dict[str, Any]:
    return {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": content}]}


def test_body_over_the_limit_is_413_by_length_and_by_streamed_bytes(client: TestClient) -> None:
    big = json.dumps(_chat("x" * 5000))
    declared = client.post(
        "/v1/chat/completions", content=big, headers={"Content-Type": "application/json"}
    )
    assert declared.status_code == 413, declared.text
    assert "larger than 4096 bytes" in declared.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000].encode()

    streamed = client.post(
        "/serving-endpoints/smollm2-135m-instruct/invocations",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert streamed.status_code == 413, streamed.text
    assert "larger than 4096 bytes" in streamed.json()["message"]
    ok = client.post("/v1/chat/completions", json=_chat("small"))
    assert ok.status_code == 200, ok.text


def test_deep_json_is_400_naming_the_problem(client: TestClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/v1/chat/completions", "/api/2.0/serving-endpoints"):
        answer = client.post(
            path,
            content=('{"messages": ' + "[" * 100 + "]" * 100 + "}") if "api" in path else deep,
            headers={"Content-Type": "application/json"},
        )
        if answer.status_code == 413:  # 100k levels is over this client's 4 KiB limit
            continue
        assert answer.status_code == 400, answer.text
        assert "levels deep" in answer.text
    big_limit = create_app(ServeOptions(engine="deterministic"), auth=TokenAuth({}))
    with TestClient(big_limit, raise_server_exceptions=False) as c:
        answer = c.post(
            "/v1/chat/completions", content=deep, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 400, answer.text
    assert "100000 levels deep; at most 64" in answer.json()["error"]["message"]


def test_non_json_content_type_is_415(client: TestClient) -> None:
    body = json.dumps(_chat("hello"))
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        answer = client.post("/v1/chat/completions", content=body, headers={"Content-Type": ctype})
        assert answer.status_code == 415, (ctype, answer.text)
    charset = client.post(
        "/v1/chat/completions",
        content=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert charset.status_code == 200, charset.text


def test_unknown_field_is_still_400(client: TestClient) -> None:
    body = {**_external_body("unknown", PLAIN_KEY), "no_such_field": 1}
    answer = client.post("/api/2.0/serving-endpoints", json=body)
    assert answer.status_code == 400, answer.text


def test_unexpected_exception_is_500_with_request_id_never_400(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR"):
        answer = client.get("/test/boom")
    assert answer.status_code == 500
    message = answer.json()["message"]
    assert "request id" in message and SECRET not in answer.text
    request_id = message.rsplit(" ", 1)[1].rstrip(")")
    assert answer.headers["x-request-id"] == request_id
    assert any(getattr(r, "request_id", None) == request_id for r in caplog.records)


def test_from_exception_maps_only_domain_errors_to_4xx() -> None:
    from ai_query.engine.backends.backend import RowFailure
    from ai_query.errors import ConfigError, UnknownEndpointError
    from ai_query.serving.http.problems import from_exception

    assert from_exception(ConfigError("bad")).status == 400
    assert from_exception(UnknownEndpointError("x", ["a"])).status == 404
    assert from_exception(RowFailure("prompt too long")).status == 400
    assert from_exception(RowFailure("provider down"), external=True).status == 502
    error = from_exception(ValueError("not ours"), request_id="r123")
    assert error.status == 500 and "r123" in error.message and "not ours" not in error.message
    assert from_exception(TypeError("bug")).status == 500


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(errors.ProviderError("provider down"), 502, id="provider-error"),
        pytest.param(errors.RowFailure("prompt too long"), 400, id="row-failure"),
        pytest.param(errors.SQLError("bad SQL"), 400, id="sql-error"),
        pytest.param(errors.UploadRejectedError("not parquet"), 400, id="upload-rejected"),
        pytest.param(errors.JobLockedError("running"), 409, id="job-locked"),
        pytest.param(errors.EngineDeadError("gone"), 503, id="engine-dead"),
        pytest.param(errors.JobError("the run failed"), 500, id="job-error"),
        pytest.param(errors.RowAlignmentError("row 3 twice"), 500, id="row-alignment"),
        pytest.param(errors.RowError("boom", 3, "ep"), 500, id="row-error"),
    ],
)
def test_domain_errors_map_by_type_and_server_failures_are_not_400(
    error: Exception, status: int
) -> None:
    from ai_query.serving.http.problems import from_exception

    answer = from_exception(error, request_id="rid-7")
    assert answer.status == status
    if status == 500:  # the server's own failure: the id names its log line
        assert answer.headers["x-request-id"] == "rid-7"


def test_an_unmapped_domain_error_is_a_500_with_a_request_id_not_a_400() -> None:
    from ai_query.errors import AIQueryError
    from ai_query.serving.http.problems import from_exception

    class NewDomainError(AIQueryError):
        """A domain error that no status was chosen for."""

    answer = from_exception(NewDomainError(f"detail {SECRET}"), request_id="rid-8")
    assert answer.status == 500 and "rid-8" in answer.message and SECRET not in answer.message


class _ExternalBackend:
    """An external model's backend failing as the last message says (the provider's refusal, a
    row failure, or a bug of ours)."""

    def __init__(self, entity: Any) -> None:
        self.entity = entity

    async def complete(self, text: str, request: Any) -> Any:
        from ai_query.errors import ProviderError, RowFailure

        what = request.conversation(text)[-1]["content"]
        if what == "provider":
            raise ProviderError("external model 'gpt-x': HTTP 401: invalid key")
        if what == "row":
            raise RowFailure("external model 'gpt-x': the prompt is too long")
        raise TypeError(f"NoneType is not subscriptable ({SECRET})")  # a bug of ours

    def health(self) -> Any:
        from ai_query.engine.process.supervision import EngineHealth, EngineState

        return EngineHealth(EngineState.READY)

    async def close(self) -> None:
        return None


def test_a_bug_in_an_external_model_call_is_a_500_with_its_request_id_not_a_502(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = ServeOptions(engine="deterministic", database=tmp_path / "endpoints.sqlite")
    auth = TokenAuth({"tok-admin": {"principal": "root", "groups": ["admins"]}})
    app = create_app(options, auth=auth, backend_factory=_ExternalBackend)
    with TestClient(app, headers={"Authorization": "Bearer tok-admin"}) as c:
        made = c.post("/api/2.0/serving-endpoints", json=_external_body("ext-bug", PLAIN_KEY))
        assert made.status_code == 200, made.text
        deadline = time.monotonic() + 10
        while c.get("/api/2.0/serving-endpoints/ext-bug").json()["state"][
            "config_update"
        ] == "IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.02)

        def ask(content: str) -> Any:
            return c.post("/v1/chat/completions", json={
                "model": "ext-bug", "messages": [{"role": "user", "content": content}]})

        with caplog.at_level("ERROR"):
            bug = ask("bug")
        assert bug.status_code == 500, bug.text
        message = bug.json()["error"]["message"]
        request_id = bug.headers["x-request-id"]
        assert message == f"internal error (request id {request_id})"
        assert SECRET not in bug.text
        assert any(getattr(r, "request_id", None) == request_id for r in caplog.records)
        refused = ask("provider")
        assert refused.status_code == 502 and "invalid key" in refused.text
        failed = ask("row")  # a row failure on an external model is the provider's too
        assert failed.status_code == 502 and "too long" in failed.text


# ---- the endpoint database -----------------------------------------------------------------


def _external_body(name: str, key: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {"openai_api_base": "http://127.0.0.1:9/v1"}
    if key is not None:
        config["openai_api_key_plaintext"] = key
    else:
        config["openai_api_key"] = "{{secrets/unit/key}}"
    return {
        "name": name,
        "config": {
            "served_entities": [
                {
                    "name": "ext",
                    "external_model": {
                        "name": "gpt-x",
                        "provider": "openai",
                        "task": "llm/v1/chat",
                        "openai_config": config,
                    },
                }
            ]
        },
    }


def _db_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _wait_not_updating(client: TestClient, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = client.get(f"/api/2.0/serving-endpoints/{name}").json()
        if got["state"]["config_update"] != "IN_PROGRESS":
            return got
        time.sleep(0.05)
    raise AssertionError(f"{name} still updating")


def test_plaintext_key_kept_out_of_the_database_and_gone_after_delete(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI_QUERY_SECRET_UNIT_KEY", SECRET)
    db = tmp_path / "endpoints.sqlite"
    store = tmp_path / "endpoints-secrets.json"
    created = client.post("/api/2.0/serving-endpoints", json=_external_body("ext1", PLAIN_KEY))
    assert created.status_code == 200, created.text
    assert PLAIN_KEY not in created.text
    got = _wait_not_updating(client, "ext1")
    assert PLAIN_KEY not in json.dumps(got)
    assert PLAIN_KEY not in client.get("/api/2.0/serving-endpoints").text
    for path in db.parent.glob(db.name + "*"):
        assert _mode(path) == 0o600, path
    assert _mode(store) == 0o600
    assert PLAIN_KEY.encode() not in _db_bytes(db)
    assert PLAIN_KEY in store.read_text()
    # the stored endpoint comes back with its key (a restart reads the same files)
    from ai_query.serving.store import EndpointStore

    again = {r.name: r for r in EndpointStore(db).load()}["ext1"]
    assert again.latest.config.served_entities[0].external_model is not None
    cfg = again.latest.config.served_entities[0].external_model.openai_config
    assert cfg.openai_api_key_plaintext == PLAIN_KEY
    # a config update without the key drops it once deployed
    update = _external_body("ext1", None)["config"]
    assert client.put("/api/2.0/serving-endpoints/ext1/config", json=update).status_code == 200
    _wait_not_updating(client, "ext1")
    assert PLAIN_KEY not in store.read_text()
    # and a delete drops the key of another endpoint
    client.post("/api/2.0/serving-endpoints", json=_external_body("ext2", PLAIN_KEY + "-2"))
    _wait_not_updating(client, "ext2")
    assert PLAIN_KEY + "-2" in store.read_text()
    assert client.delete("/api/2.0/serving-endpoints/ext2").status_code == 200
    assert PLAIN_KEY + "-2" not in store.read_text()
    assert (PLAIN_KEY + "-2").encode() not in _db_bytes(db)


def test_older_database_with_a_plaintext_key_is_moved_out_and_made_private(
    tmp_path: Path,
) -> None:
    import sqlite3

    from ai_query.catalog import Endpoint
    from ai_query.serving.store import EndpointRecord, EndpointStore

    db = tmp_path / "old.sqlite"
    store = EndpointStore(db)
    endpoint = Endpoint.model_validate(_external_body("old", PLAIN_KEY))
    store.put(
        EndpointRecord(
            name="old",
            id="1",
            creator="x",
            creation_timestamp=1,
            last_updated_timestamp=1,
            config_version=1,
            served=endpoint,
        )
    )
    store.close()
    con = sqlite3.connect(db)  # write the key in, as an older version did
    con.execute("UPDATE endpoints SET served = ?", (endpoint.model_dump_json(),))
    con.commit()
    con.close()
    db.chmod(0o644)
    loaded = EndpointStore(db)
    (record,) = loaded.load()
    assert record.served is not None
    loaded.close()
    assert _mode(db) == 0o600
    assert PLAIN_KEY.encode() not in _db_bytes(db)
