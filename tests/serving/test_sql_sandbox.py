"""The web SQL editor's locked workspace, through ``ai-query serve`` as the page calls it: a
query-only token, a tokens file, a catalog file and an endpoints database on the server's disk.

Every attempt to reach the server's files, extensions or settings gets one clear error and
touches nothing; a query past its time is stopped while others are served; uploads are kept per
principal (by a hash, never a lossy rewrite), checked once, under quotas, and removed even after
the server is killed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.serving.http_servers import HTTPServer

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "tok-admin-7Q2x"
QUERY_TOKEN = "tok-query-9Kd3"
TOKENS = {
    ADMIN_TOKEN: {"principal": "admin", "groups": ["admins"]},
    QUERY_TOKEN: "qa",
    "tok-alice-at": "alice@x.com",
    "tok-alice-us": "alice_x.com",
    "tok-dot": ".",
    "tok-dotdot": "..",
}
TIMEOUT_S = 3


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    work = tmp_path_factory.mktemp("sql-sandbox")
    (work / "tokens.json").write_text(json.dumps(TOKENS))
    (work / "catalog.json").write_text(json.dumps({"aliases": {"my-chat": "smollm2-135m-instruct"},
                                                   "include_defaults": True}))
    server = HTTPServer(
        work, "--engine", "deterministic", "--tokens-file", str(work / "tokens.json"),
        "--catalog", str(work / "catalog.json"), "--database", str(work / "endpoints.sqlite"),
        "--sql-timeout", str(TIMEOUT_S),
    ).start()
    yield server
    server.stop()


def _query(server: HTTPServer, sql: str, token: str = QUERY_TOKEN) -> dict[str, Any]:
    with server.client(token) as c:
        answer = c.post("/api/ui/sql/query", json={"sql": sql})
    assert answer.status_code == 200, answer.text
    last: dict[str, Any] = json.loads(answer.text.splitlines()[-1])
    return last


def _upload(server: HTTPServer, name: str, data: bytes, fmt: str = "csv",
            token: str = QUERY_TOKEN, **extra: Any) -> httpx.Response:
    with server.client(token) as c:
        return c.post(f"/api/ui/sql/tables/{name}", json={
            "format": fmt, "data_base64": base64.b64encode(data).decode(), **extra})


def _files(server: HTTPServer, name: str) -> dict[str, str]:
    work = server.workdir
    return {"tokens": str(work / "tokens.json"), "catalog": str(work / "catalog.json"),
            "database": str(work / "endpoints.sqlite"), "passwd": "/etc/passwd",
            "out": str(work / name)}


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param("SELECT content FROM read_text('{tokens}')", "disabled by configuration",
                     id="read_text-tokens"),
        pytest.param("SELECT * FROM read_csv_auto('{tokens}')", "disabled by configuration",
                     id="read_csv_auto-tokens"),
        pytest.param("SELECT * FROM read_parquet('{tokens}')", "disabled by configuration",
                     id="read_parquet-tokens"),
        pytest.param("SELECT * FROM read_json('{tokens}')", "disabled by configuration",
                     id="read_json-tokens"),
        pytest.param("SELECT content FROM read_text('{catalog}')", "disabled by configuration",
                     id="read_text-catalog"),
        pytest.param("SELECT * FROM read_blob('{database}')", "disabled by configuration",
                     id="read_blob-database"),
        pytest.param("SELECT * FROM read_csv('{passwd}', sep = ':')", "disabled by configuration",
                     id="etc-passwd"),
        pytest.param("SELECT * FROM glob('/tmp/*')", "disabled by configuration", id="glob"),
        pytest.param("COPY (SELECT 1) TO '{out}'", "statement 1 is COPY", id="copy-to"),
        pytest.param("EXPORT DATABASE '{out}'", "statement 1 is EXPORT", id="export-database"),
        pytest.param("ATTACH '{out}' AS x", "statement 1 is ATTACH", id="attach"),
        pytest.param("SELECT 1; ATTACH '{out}' AS x", "statement 2 is ATTACH", id="attach-second"),
        pytest.param("INSTALL httpfs", "statement 1 is INSTALL", id="install"),
        pytest.param("LOAD httpfs", "statement 1 is LOAD", id="load"),
        pytest.param("SET enable_external_access = true", "statement 1 is SET", id="set-access"),
        pytest.param("SET memory_limit = '64GB'", "statement 1 is SET", id="set-memory"),
        pytest.param("PRAGMA enable_profiling", "statement 1 is PRAGMA", id="pragma"),
        pytest.param("CREATE MACRO m(a) AS a", "statement 1 is CREATE MACRO", id="create-macro"),
        pytest.param("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
                     "statement 1 is CREATE", id="create-secret"),
        pytest.param("SELECT * FROM sniff_csv('{tokens}')", "disabled by configuration",
                     id="sniff_csv-tokens"),
    ],
)
def test_the_workspace_reaches_no_file_extension_or_setting(
    editor: HTTPServer, sql: str, expected: str
) -> None:
    files = _files(editor, "written")
    answer = _query(editor, sql.format(**files))
    assert expected in answer.get("error", ""), answer
    text = json.dumps(answer)
    assert not any(token in text for token in TOKENS)
    assert not Path(files["out"]).exists()


def test_allowed_statements_run_and_settings_are_the_lock(editor: HTTPServer) -> None:
    made = _query(editor, "CREATE TABLE z AS SELECT 41 + 1 AS a; CREATE VIEW v AS SELECT a FROM z; "
                          "SELECT * FROM v")
    assert made["rows"] == [[42]]
    assert "physical_plan" in json.dumps(_query(editor, "EXPLAIN SELECT 1"))
    settings = _query(editor, "SELECT name, value FROM duckdb_settings() WHERE name IN "
                              "('enable_external_access', 'lock_configuration', 'threads', "
                              "'autoload_known_extensions', 'autoinstall_known_extensions') "
                              "ORDER BY name")
    assert settings["rows"] == [["autoinstall_known_extensions", "false"],
                                ["autoload_known_extensions", "false"],
                                ["enable_external_access", "false"],
                                ["lock_configuration", "true"], ["threads", "1"]]
    bad = _query(editor, "SELEC 1")
    assert "Parser Error" in bad["error"]


def test_a_huge_result_is_refused_with_the_limit(editor: HTTPServer) -> None:
    answer = _query(editor, "SELECT * FROM range(100000) a, range(10000) b")  # 10^9 rows
    assert "more than 100000 rows" in answer["error"]
    counted = _query(editor, "SELECT count(*) FROM range(1000) a, range(1000) b")
    assert counted["rows"] == [[1_000_000]]


def test_a_query_past_its_time_is_stopped_while_others_are_served(editor: HTTPServer) -> None:
    slow: dict[str, Any] = {}

    def run_slow() -> None:
        slow.update(_query(editor, "SELECT count(*) FROM range(1000000000000) a "
                                   "WHERE a.range % 7 = 3"))

    started = time.monotonic()
    thread = threading.Thread(target=run_slow)
    thread.start()
    time.sleep(0.5)
    assert _query(editor, "SELECT 'still here' AS s", ADMIN_TOKEN)["rows"] == [["still here"]]
    with editor.client() as c:
        assert c.get("/health").status_code == 200
    thread.join(60)
    assert f"time limit of {TIMEOUT_S} s" in slow["error"]
    assert time.monotonic() - started < TIMEOUT_S + 20


def test_uploads_ai_query_and_task_functions_work_and_every_ai_row_is_counted(
    editor: HTTPServer,
) -> None:
    assert _upload(editor, "reviews", b"id,body\n1,great\n2,awful\n3,\n").status_code == 200
    answer = _query(editor, "SELECT id, ai_query('my-chat', body) AS a, "
                            "ai_classify(body, ARRAY['good', 'bad']) AS c, "
                            "ai_analyze_sentiment(body) AS s FROM reviews ORDER BY id")
    assert [r[0] for r in answer["rows"]] == [1, 2, 3]
    assert answer["rows"][0][1] == "smollm2-135m-instruct says: great"
    assert answer["rows"][2][1:] == [None, None, None]
    assert answer["rows_answered"] == 9  # 3 rows through 3 AI calls each
    with editor.client(QUERY_TOKEN) as c:
        tables = c.get("/api/ui/sql/tables").json()["tables"]
    assert {"name": "reviews", "format": "csv", "bytes": 27, "rows": 3, "columns": 2,
            "vector_index": None} in tables


def test_a_failed_row_is_the_rows_own_error_not_duckdbs_wrapper(editor: HTTPServer) -> None:
    answer = _query(editor, "SELECT ai_query('my-chat', repeat('word ', 2000)) AS a")
    assert answer["error"].startswith("ai_query endpoint 'my-chat' failed on row 0: "), answer
    assert "maximum context length" in answer["error"]
    assert "Python exception" not in answer["error"] and "UDF" not in answer["error"]


DOCS = (b"id,body\n1,the parcel came late\n2,the handle snapped off\n3,too expensive\n"
        b"4,\n")
DOCS_INDEX = {"name": "docs_index", "key": "id", "text": "body", "endpoint": "all-minilm-l6-v2"}


def test_vector_search_over_an_upload_with_an_index(editor: HTTPServer) -> None:
    token = "tok-alice-at"
    answer = _upload(editor, "docs", DOCS, token=token, vector_index=DOCS_INDEX)
    assert answer.status_code == 200, answer.text
    assert {"name": "docs", "format": "csv", "bytes": len(DOCS), "rows": 4, "columns": 2,
            "vector_index": "docs_index"} in answer.json()["tables"]
    found = _query(editor, "SELECT id, body, round(search_score, 4) AS s FROM vector_search("
                           "index => 'docs_index', query_text => 'the handle snapped off', "
                           "num_results => 2)", token)
    assert found["columns"] == ["id", "body", "s"], found
    assert found["rows"][0] == [2, "the handle snapped off", 1.0]  # its own text: cosine 1
    assert len(found["rows"]) == 2 and found["rows"][1][0] in (1, 3)
    joined = _query(editor, "SELECT d.id, v.id AS nearest FROM docs d, LATERAL vector_search("
                            "index => 'docs_index', query_text => d.body, num_results => 1) v "
                            "WHERE d.body IS NOT NULL ORDER BY d.id", token)
    assert joined["rows"] == [[1, 1], [2, 2], [3, 3]], joined
    # the index is the user's own: another user has none, and the view is read-only
    assert "no vector index 'docs_index' (known: none)" in _query(
        editor, "SELECT * FROM vector_search(index => 'docs_index', query_text => 'x')",
        "tok-alice-us")["error"]
    assert "statement 1 is DELETE" in _query(editor, "DELETE FROM docs_index", token)["error"]


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        pytest.param({**DOCS_INDEX, "text": "nope"}, "has no text column 'nope' (its columns: "
                     "id, body)", id="no-column"),
        pytest.param({**DOCS_INDEX, "key": "body"}, "key column 'body' must hold one distinct",
                     id="key-not-unique"),
        pytest.param({**DOCS_INDEX, "endpoint": "my-chat"}, "'my-chat' is not an embeddings "
                     "endpoint", id="chat-endpoint"),
        pytest.param({**DOCS_INDEX, "name": "bad name"}, "table name 'bad name' must be",
                     id="bad-name"),
        pytest.param({**DOCS_INDEX, "name": "ai_query_vector_indexes"}, "is taken",
                     id="registry-name"),
        pytest.param({"name": "x"}, 'vector_index must be {"name", "key", "text", "endpoint"}',
                     id="shape"),
        pytest.param({**DOCS_INDEX, "extra": 1}, "unknown: extra", id="unknown-field"),
    ],
)
def test_an_index_that_cannot_be_built_refuses_the_upload(
    editor: HTTPServer, index: dict[str, Any], expected: str
) -> None:
    answer = _upload(editor, "docs2", DOCS.replace(b"4,\n", b"4,too expensive\n"),
                     token="tok-dotdot", vector_index=index)
    assert answer.status_code == 400, answer.text
    assert expected in answer.json()["message"]
    with editor.client("tok-dotdot") as c:
        assert "docs2" not in [t["name"] for t in c.get("/api/ui/sql/tables").json()["tables"]]


def test_an_index_is_embedded_with_the_callers_own_rights(editor: HTTPServer) -> None:
    with editor.client(ADMIN_TOKEN) as c:
        made = c.post("/api/2.0/serving-endpoints", json={"name": "private-embed", "config": {
            "served_entities": [{"name": "e", "entity_name": "model-e",
                                 "task": "llm/v1/embeddings"}]}})
        assert made.status_code == 200, made.text
        deadline = time.monotonic() + 30
        while c.get("/api/2.0/serving-endpoints/private-embed").json()["state"][
                "config_update"] == "IN_PROGRESS" and time.monotonic() < deadline:
            time.sleep(0.1)
    index = {**DOCS_INDEX, "endpoint": "private-embed"}
    refused = _upload(editor, "docs3", DOCS, token=QUERY_TOKEN, vector_index=index)
    assert refused.status_code == 403, refused.text
    assert "private-embed" in refused.json()["message"]
    assert _upload(editor, "docs3", DOCS, token=ADMIN_TOKEN, vector_index=index).status_code == 200


def test_principals_never_share_uploads(editor: HTTPServer) -> None:
    assert _upload(editor, "salaries", b"who,pay\nalice,100\n", token="tok-alice-at").status_code == 200
    for token in ("tok-alice-us", "tok-dot", "tok-dotdot"):
        with editor.client(token) as c:
            assert c.get("/api/ui/sql/tables").json()["tables"] == []
        assert "salaries does not exist" in _query(editor, "SELECT * FROM salaries", token)["error"]
    assert _query(editor, "SELECT pay FROM salaries", "tok-alice-at")["rows"] == [[100]]


def test_bad_uploads_are_refused_at_upload_with_the_reason(editor: HTTPServer) -> None:
    wide = (",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join("1" * 100_000) + "\n")
    answer = _upload(editor, "wide", wide.encode())
    assert answer.status_code == 400
    assert "100000 columns; a table may have at most 1000" in answer.json()["message"]
    broken = _upload(editor, "broken", b"PAR1 this is not parquet PAR1", fmt="parquet")
    assert broken.status_code == 400
    assert "not a Parquet file DuckDB can read" in broken.json()["message"]
    with editor.client(QUERY_TOKEN) as c:
        newline = c.post("/api/ui/sql/tables/bad%0A", json={
            "format": "csv", "data_base64": base64.b64encode(b"a\n1\n").decode()})
        assert newline.status_code == 400
        assert "table name 'bad\\n'" in newline.json()["message"]
        too_big = c.post("/api/ui/sql/tables/big", json={
            "format": "csv", "data_base64": base64.b64encode(b"x" * (8 * 1024 * 1024 + 1)).decode()})
        assert too_big.status_code == 413
        assert too_big.json()["error_code"] == "REQUEST_TOO_LARGE"
        names = [t["name"] for t in c.get("/api/ui/sql/tables").json()["tables"]]
    assert "wide" not in names and "broken" not in names
    assert _query(editor, "SELECT 1 AS one")["rows"] == [[1]]  # nothing broke the user's queries


def test_quotas_and_delete(editor: HTTPServer) -> None:
    token = "tok-dot"
    table = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2, 3]}), table)
    for i in range(20):
        assert _upload(editor, f"t{i}", table.getvalue(), "parquet", token).status_code == 200
    over = _upload(editor, "t20", b"a\n1\n", token=token)
    assert over.status_code == 400
    assert "20 tables, the most a user may keep" in over.json()["message"]
    assert _upload(editor, "T3", b"a\n7\n", token=token).status_code == 200  # replaces t3
    assert _query(editor, "SELECT * FROM t3", token)["rows"] == [[7]]
    with editor.client(token) as c:
        answer = c.delete("/api/ui/sql/tables/t3")
        assert answer.status_code == 200
        assert len(answer.json()["tables"]) == 19
        assert c.delete("/api/ui/sql/tables/t3").status_code == 400
    assert _upload(editor, "t20", b"a\n1\n", token=token).status_code == 200


def test_uploads_are_removed_after_a_kill_9_at_the_next_start(tmp_path: Path) -> None:
    (tmp_path / "tokens.json").write_text(json.dumps({QUERY_TOKEN: "qa"}))
    args = ("--engine", "deterministic", "--tokens-file", str(tmp_path / "tokens.json"))
    first = HTTPServer(tmp_path / "first", *args).start()
    try:
        assert _upload(first, "kept", b"a\n1\n").status_code == 200
        pid = first.proc.pid
        folders = [p for p in _upload_roots() if p.name.startswith(f"{pid}-")]
        assert len(folders) == 1 and any(folders[0].rglob("*.duckdb"))
        os.kill(pid, signal.SIGKILL)  # by PID: no clean-up can run
        first.proc.wait(10)
    finally:
        first.stop()
    assert folders[0].exists()  # nothing could clean up
    second = HTTPServer(tmp_path / "second", *args).start()
    try:
        assert not folders[0].exists()
    finally:
        second.stop()


def _upload_roots() -> list[Path]:
    import tempfile

    parent = Path(tempfile.gettempdir()) / f"ai-query-sql-{os.getuid()}"
    return list(parent.iterdir()) if parent.exists() else []


def test_explain_shows_the_ai_work_in_the_editor_with_no_model_call(editor: HTTPServer) -> None:
    assert _upload(editor, "notes", b"id,body\n1,a b c\n2,a b c\n3,\n4,d e\n").status_code == 200
    answer = _query(editor, "EXPLAIN SELECT ai_query('my-chat', body) FROM notes WHERE id < 4")
    [row] = [dict(zip(answer["columns"], r, strict=True)) for r in answer["rows"]]
    assert (row["rows"], row["null_rows"], row["distinct_requests"]) == (3, 1, 1)
    assert row["prompt_tokens"] == 3 and row["endpoint"] == "smollm2-135m-instruct"
    assert answer["rows_answered"] == 0  # nothing was answered
    made = _query(editor, "EXPLAIN CREATE TABLE out AS SELECT ai_query('my-chat', body) FROM notes")
    assert "error" not in made, made
    assert "error" in _query(editor, "SELECT * FROM out")  # EXPLAIN wrote nothing
