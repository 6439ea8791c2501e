"""The web UI in a real headless browser: Debian's chromium driven by Playwright, against
``ai-query serve`` on the deterministic engine (the ``det_server`` fixture, auth on; and a
server with auth off).

Every test runs under the server's Content-Security-Policy and fails on any violation of it or
any uncaught error in the page.

Set ``AI_QUERY_UI_SCREENSHOTS=docs/ui`` to refresh the README's screenshots from these tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_query.serving.http.headers import SECURITY_HEADERS
from tests.serving.http_servers import HTTPServer

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
SHOTS = os.environ.get("AI_QUERY_UI_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("the UI tests need Debian's chromium: bash scripts/setup.sh --dev installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    """``ai-query serve`` with auth off: no tokens file, on 127.0.0.1 (the default)."""
    server = HTTPServer(tmp_path_factory.mktemp("open"), "--engine", "deterministic").start()
    yield server
    server.stop()


class Problems(list[str]):
    """What went wrong in a page: CSP violations and uncaught errors, as Chromium reported."""

    def watch(self, page: Any) -> None:
        page.on("console", lambda m: self.append(m.text)
                if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda exc: self.append(f"uncaught: {exc}"))


@pytest.fixture
def problems() -> Problems:
    return Problems()


@pytest.fixture
def page(browser: Any, problems: Problems) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems.watch(page)
    yield page
    context.close()
    assert problems == [], "the page broke its Content-Security-Policy or threw"


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _sign_in(page: Any, server: HTTPServer, token: str) -> None:
    page.goto(server.url + "/")
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#endpoints tbody tr")


def test_sign_in_keeps_the_token_in_the_session_only(page: Any, det_server: HTTPServer) -> None:
    page.goto(det_server.url + "/")
    page.wait_for_selector("#signin #token")
    assert page.inner_text("#error") == ""  # the page's probe of /api/ui/me got its 401
    assert page.inner_text("#who") == ""
    _shot(page, "sign-in")
    page.fill("#token", "wrong")
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#error:has-text('401')")
    _sign_in(page, det_server, "tok-alice")
    assert page.inner_text("#who") == "alice (admin)"
    assert page.locator("#signout").is_visible()
    assert page.evaluate("sessionStorage.getItem('ai_query.token')") == "tok-alice"
    assert page.evaluate("localStorage.length") == 0
    assert page.locator("#nav-jobs").is_hidden()  # no --jobs-dir on this server
    assert page.locator(f"#endpoints tr[data-endpoint='{CHAT}']").count() == 1
    _shot(page, "endpoints")


def test_create_an_endpoint_through_the_form(page: Any, det_server: HTTPServer) -> None:
    _sign_in(page, det_server, "tok-carol")
    page.click("#create")
    page.fill("#ep-name", "bad name!")
    page.fill("#entity-model", "model-x")
    page.click("#submit-create")
    # The API's own validation message, shown as it answered.
    page.wait_for_selector("#form-error:has-text('400')")
    assert "name" in page.inner_text("#form-error")
    # An external model's key is a secret reference from the user's own scopes, never typed.
    page.select_option("#kind", "external")
    assert page.locator("#secret-scope option").all_inner_texts() == ["team"]
    assert page.locator("#create-form input[type=password]").count() == 0
    page.fill("#ep-name", "ui-external")
    page.fill("#ext-name", "gpt-x")
    page.fill("#ext-base", "http://127.0.0.1:9/v1")
    page.fill("#secret-key", "openai")
    page.click("#submit-create")
    page.wait_for_selector("#form-error:has-text('http://127.0.0.1:9/v1')")
    page.select_option("#kind", "local")
    page.fill("#ep-name", "ui-made")
    page.fill("#calls", "100")
    page.fill("#tags", "team=search")
    _shot(page, "create")
    page.click("#submit-create")
    page.wait_for_selector("h1:has-text('ui-made')")
    page.wait_for_selector("#controls #delete")
    deadline = time.monotonic() + 30
    while "Ready" not in page.inner_text("main p") and time.monotonic() < deadline:
        page.reload()
        page.wait_for_selector("#permission")
    assert page.inner_text("#permission") == "CAN_MANAGE"
    assert "100 calls per minute" in page.inner_text("#rate-limits")
    assert "carol" in page.inner_text("#permissions")
    page.click("#edit")
    page.fill("#edit-calls", "5")
    page.fill("#edit-config", "{")
    page.click("#save")
    page.wait_for_selector("#edit-error:has-text('not JSON')")
    page.fill("#edit-config", '{"served_entities": []}')
    page.click("#save")
    page.wait_for_selector("#edit-error:has-text('400')")  # the API's own message
    page.click("#cancel-edit")
    page.click("#edit")
    page.fill("#edit-calls", "5")
    page.click("#save")
    page.wait_for_selector("#rate-limits:has-text('5 calls per minute')")
    with det_server.client("tok-carol") as c:
        data = c.get("/api/2.0/serving-endpoints/ui-made").json()
    assert data["config"]["served_entities"][0]["entity_name"] == "model-x"
    assert data["tags"] == [{"key": "team", "value": "search"}]
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.wait_for_selector("#endpoints tbody tr")
    assert page.locator("#endpoints tr[data-endpoint='ui-made']").count() == 0


def test_query_an_endpoint(page: Any, det_server: HTTPServer) -> None:
    _sign_in(page, det_server, "tok-alice")
    page.goto(f"{det_server.url}/#/endpoints/{CHAT}")
    page.wait_for_selector("#charts .chart")
    page.click("#query")
    page.wait_for_selector("#request")
    page.fill("#request", '{"messages": [{"role": "user", "content": "hello ui"}], "max_tokens": 8}')
    page.click("#send")
    page.wait_for_selector("#response-status:has-text('Status 200')")
    assert f"{CHAT} says: hello ui" in page.inner_text("#response")
    assert "completion" in page.inner_text("#response-status")
    assert "/invocations" in page.inner_text("#snippet")
    page.click("#snippet-sql")
    assert f"ai_query(\n  '{CHAT}',\n  'hello ui'" in page.inner_text("#snippet")
    _shot(page, "query")
    # The charts chart the server's own metrics: a request made now shows on the next poll.
    page.goto(f"{det_server.url}/#/endpoints/{CHAT}")
    page.wait_for_selector("#chart-rps svg")
    page.wait_for_timeout(2500)
    with det_server.client("tok-alice") as c:
        for _ in range(3):
            assert c.post(f"/serving-endpoints/{CHAT}/invocations", json={
                "messages": [{"role": "user", "content": "x"}]}).status_code == 200
    # Predicates as functions: a bare expression would be eval'd, which the CSP refuses.
    page.wait_for_function(
        "() => parseFloat(document.querySelector('#chart-rps .value').textContent) > 0",
        timeout=10_000)
    page.wait_for_function(
        "() => parseFloat(document.querySelector('#chart-tps .value').textContent) > 0",
        timeout=10_000)
    _shot(page, "endpoint")


def test_playground_streams_answers_side_by_side(page: Any, det_server: HTTPServer) -> None:
    _sign_in(page, det_server, "tok-alice")
    page.goto(f"{det_server.url}/#/playground")
    page.wait_for_selector("#pg-model-1 option", state="attached")
    page.select_option("#pg-model-1", CHAT)
    page.select_option("#pg-model-2", CHAT)
    page.fill("#pg-system", "be brief")
    page.fill("#pg-prompt", "tell me a b c")
    # The repetition remedy is in sight and is what is sent: a small model's fair chance.
    assert page.input_value("#pg-temperature") == "0.7"
    assert page.input_value("#pg-repetition-penalty") == "1.1"
    page.fill("#pg-repetition-penalty", "1.3")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
        page.click("#pg-send")
    body = sent.value.post_data_json
    assert (body["temperature"], body["repetition_penalty"]) == (0.7, 1.3)
    page.wait_for_selector("#pg-stats-1[data-done]")
    page.wait_for_selector("#pg-stats-2[data-done]")
    for i in (1, 2):
        assert page.inner_text(f"#pg-answer-{i}") == f"{CHAT} says: tell me a b c"
        assert "completion tokens" in page.inner_text(f"#pg-stats-{i}")
    _shot(page, "playground")


def test_playground_attaches_an_image(page: Any, det_server: HTTPServer, tmp_path: Path) -> None:
    from ai_query.engine.core.files import file_digest
    from tests.images import image_bytes

    data = image_bytes(9)
    (tmp_path / "cat.png").write_bytes(data)
    _sign_in(page, det_server, "tok-alice")
    page.goto(f"{det_server.url}/#/playground")
    page.wait_for_selector("#pg-model-1 option", state="attached")
    page.select_option("#pg-model-1", CHAT)
    page.fill("#pg-prompt", "what is this")
    page.set_input_files("#pg-image", str(tmp_path / "cat.png"))
    page.wait_for_selector("#pg-image-preview:not([hidden])")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions")) as sent:
        page.click("#pg-send")
    text, image = sent.value.post_data_json["messages"][-1]["content"]
    assert text == {"type": "text", "text": "what is this"}
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    page.wait_for_selector("#pg-stats-1[data-done]")
    assert page.inner_text("#pg-answer-1") == (
        f"{CHAT} says: what is this [image/png {file_digest(data)[:8]}]"
    )


def test_query_only_user_sees_no_edit_controls_and_gets_403(
    page: Any, det_server: HTTPServer
) -> None:
    _sign_in(page, det_server, "tok-bob")
    assert page.locator("#create").count() == 0
    page.goto(f"{det_server.url}/#/endpoints/{CHAT}")
    page.wait_for_selector("#controls #query")
    assert page.inner_text("#permission") == "CAN_QUERY"
    for control in ("#edit", "#delete", "#permissions"):
        assert page.locator(control).count() == 0
    status = page.evaluate(
        """async (name) => (await fetch(`/api/2.0/serving-endpoints/${name}`, {
            method: "DELETE",
            headers: {Authorization: `Bearer ${sessionStorage.getItem("ai_query.token")}`},
        })).status""",
        CHAT,
    )
    assert status == 403
    with det_server.client("tok-bob") as c:
        assert c.get(f"/api/2.0/serving-endpoints/{CHAT}").status_code == 200


def test_sql_editor_runs_ai_query_over_an_uploaded_table(
    page: Any, det_server: HTTPServer, tmp_path: Path
) -> None:
    (tmp_path / "docs.csv").write_text("id,text\n1,hello\n2,world\n3,again\n")
    _sign_in(page, det_server, "tok-bob")
    page.click("#nav-sql")
    page.wait_for_selector("#sql-upload")
    page.set_input_files("#sql-file", str(tmp_path / "docs.csv"))
    page.click("#sql-upload")
    page.wait_for_selector("#sql-tables li:has-text('docs')")
    assert "3 rows, 2 columns" in page.inner_text("#sql-tables li:has-text('docs')")
    page.fill("#sql", f"SELECT id, ai_query('{CHAT}', text) AS answer FROM docs ORDER BY id")
    page.click("#sql-run")
    page.wait_for_selector("#sql-status:has-text('3 rows')")
    cells = page.locator("#sql-result tbody tr td:nth-child(2)").all_inner_texts()
    assert cells == [f"{CHAT} says: {w}" for w in ("hello", "world", "again")]
    assert "3 ai_query rows answered" in page.inner_text("#sql-status")
    _shot(page, "sql")
    with page.expect_download() as download:
        page.click("#download-csv")
    saved = tmp_path / "result.csv"
    download.value.save_as(saved)
    assert saved.read_text().splitlines()[1] == f'1,"{CHAT} says: hello"'
    # An endpoint bob may not query: Flight refuses the rows with his own token.
    with det_server.client("tok-alice") as c:
        body = {"name": "alice-only", "config": {"served_entities": [
            {"name": "m", "entity_name": "model-m", "task": "llm/v1/chat"}]}}
        assert c.post("/api/2.0/serving-endpoints", json=body).status_code == 200
    page.fill("#sql", "SELECT ai_query('alice-only', 'x') AS answer")
    page.click("#sql-run")
    page.wait_for_selector("#error:has-text('alice-only')")
    # A second table with a vector index built at upload, then vector_search over it.
    (tmp_path / "notes.csv").write_text("id,body\n1,red apples\n2,blue sky\n")
    page.set_input_files("#sql-file", str(tmp_path / "notes.csv"))
    page.click("#sql-index summary")
    for field, value in (("name", "notes_idx"), ("key", "id"), ("text", "body"),
                         ("endpoint", "all-minilm-l6-v2")):
        page.fill(f"#sql-index-{field}", value)
    page.click("#sql-upload")
    page.wait_for_selector("#sql-tables li:has-text('vector index notes_idx')")
    page.fill("#sql", "SELECT id FROM vector_search(index => 'notes_idx', "
                      "query_text => 'blue sky', num_results => 1)")
    page.click("#sql-run")
    page.wait_for_selector("#sql-status:has-text('1 rows')")
    assert page.locator("#sql-result tbody tr td").all_inner_texts() == ["2"]
    page.click("#sql-tables button[data-table='notes']")
    page.wait_for_selector("#sql-tables li:has-text('notes')", state="detached")
    # Delete the table: the list shows what the server answered, and the table is gone.
    page.click("#sql-tables button[data-table='docs']")
    page.wait_for_selector("#sql-tables li:has-text('docs')", state="detached")
    with det_server.client("tok-bob") as c:
        assert c.get("/api/ui/sql/tables").json() == {"tables": []}


def test_jobs_page_shows_the_jobs_directory_run_log(
    page: Any, det_server: HTTPServer, tmp_path: Path
) -> None:
    from tests.jobs.helpers import reviews, write_reviews
    from tests.jobs.test_cli import JOB

    jobs = tmp_path / "jobs"
    write_reviews(jobs / "data" / "reviews.parquet", reviews(5))
    (jobs / "plain.toml").write_text(JOB)
    (jobs / "broken.toml").write_text('name = "broken"\n')
    done = subprocess.run([sys.executable, "-m", "ai_query.cli", "jobs", "run", "plain.toml"],
                          cwd=jobs, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tokens = det_server.workdir / "tokens.json"
    server = HTTPServer(tmp_path / "server", "--engine", "deterministic", "--preload", "none",
                        "--tokens-file", str(tokens), "--database",
                        str(tmp_path / "endpoints.sqlite"), "--jobs-dir", str(jobs)).start()
    try:
        _sign_in(page, server, "tok-alice")  # the Jobs page is for admins and group jobs
        page.click("#nav-jobs")
        page.wait_for_selector("[data-job='plain'] table.runs")
        row = page.locator("[data-job='plain'] table.runs tbody tr").first.inner_text()
        assert "succeeded" in row and "\t5\t0\t" in row
        assert "inputs" in page.inner_text("[data-job='broken.toml'] .error")  # what it lacks
        _shot(page, "jobs")
    finally:
        server.stop()


def test_auth_off_opens_on_the_endpoints_as_the_local_admin(
    page: Any, open_server: HTTPServer
) -> None:
    page.goto(open_server.url + "/")
    page.wait_for_selector(f"#endpoints tr[data-endpoint='{CHAT}']")
    assert page.locator(f"#endpoints tr[data-endpoint='{EMBED}']").count() == 1
    assert page.inner_text("#who") == "anonymous (admin) · auth off"
    assert page.locator("#signin").count() == 0 and page.locator("#token").count() == 0
    assert page.locator("#signout").is_hidden()
    assert page.locator("#create").is_visible()  # the local admin may create endpoints
    assert page.evaluate("sessionStorage.length") == 0
    _shot(page, "auth-off")
    # Every view opens without a token: the SQL editor too (a reload keeps no sign-in).
    page.goto(open_server.url + "/#/sql")
    page.reload()
    page.wait_for_selector("#sql-run")
    page.fill("#sql", f"SELECT ai_query('{CHAT}', 'open') AS answer")
    page.click("#sql-run")
    page.wait_for_selector("#sql-status:has-text('1 rows')")
    assert page.inner_text("#sql-result tbody td") == f"{CHAT} says: open"
    assert page.locator("#token").count() == 0


def test_headers_reach_the_browser_on_page_assets_api_and_errors(
    page: Any, det_server: HTTPServer
) -> None:
    # The listener only keeps each response: asking for its headers inside the listener is a
    # round trip to the browser that can still be pending when the sign-in returns.
    seen: dict[tuple[str, int], Any] = {}
    page.on("response", lambda r: seen.setdefault((r.url.removeprefix(det_server.url), r.status), r))
    _sign_in(page, det_server, "tok-alice")
    keys = [("/", 200), ("/ui/app.js", 200), ("/ui/app.css", 200),
            ("/api/ui/me", 401), ("/api/ui/me", 200), ("/api/2.0/serving-endpoints", 200)]
    for _ in range(100):  # events already sent are delivered while the page waits
        if all(key in seen for key in keys):
            break
        page.wait_for_timeout(50)
    for key in keys:
        assert key in seen, sorted(seen)
        headers = seen[key].all_headers()
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name.lower()) == value, (key, name)


def test_the_page_cannot_be_framed_and_csp_violations_are_caught(
    page: Any, det_server: HTTPServer, problems: Problems
) -> None:
    # The watch works: an inline style set as an attribute is refused, and reported.
    page.goto(det_server.url + "/")
    page.wait_for_selector("#signin")
    page.evaluate("""() => {
        const div = document.createElement("div");
        div.setAttribute("style", "color: red");
        document.body.append(div);
    }""")
    page.wait_for_timeout(200)
    assert any("style-src" in p for p in problems), problems
    problems.clear()
    # A page of another origin that frames the UI gets nothing.
    page.route("http://other.test/", lambda route: route.fulfill(
        content_type="text/html", body=f'<iframe src="{det_server.url}/"></iframe>'))
    page.goto("http://other.test/")
    page.wait_for_timeout(1500)
    framed = [f for f in page.frames if f is not page.main_frame]
    assert len(framed) == 1
    assert framed[0].url == "chrome-error://chromewebdata/"  # refused: Chromium's error page
