"""A reasoning model behind ``ai-query serve``, asked with the official clients: the OpenAI
routes keep the reasoning in ``reasoning_content``, the Databricks invocations route in
Databricks' shape (a ``reasoning`` part, then the ``text``), and both count its tokens."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole

from tests.engine.test_reasoning_provider import THOUGHT, _Provider
from tests.serving.http_servers import HTTPServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HTTPServer, _Provider]]:
    provider = _Provider("databricks")
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    work = tmp_path_factory.mktemp("reasoning")
    catalog = work / "catalog.json"
    catalog.write_text(json.dumps([{"name": "ext-reasoner", "config": {"served_entities": [
        {"external_model": {
            "name": "reasoner", "provider": "openai-compatible", "task": "llm/v1/chat",
            "openai_config": {"openai_api_base": f"http://127.0.0.1:{provider.server_port}/v1",
                              "openai_api_key_plaintext": "sk-test"}}}]}}]))
    server = HTTPServer(work, "--engine", "deterministic", "--catalog", str(catalog),
                        "--database", str(work / "db.sqlite"),
                        "--inference-table", str(work / "inference"))
    server.start()
    yield server, provider
    server.stop()
    provider.shutdown()
    provider.server_close()


def test_the_openai_client_gets_the_reasoning_apart(served: tuple[HTTPServer, _Provider]) -> None:
    server, _ = served
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    answer = client.chat.completions.create(
        model="ext-reasoner", messages=[{"role": "user", "content": "Name a fruit."}]
    )
    message = answer.choices[0].message
    assert message.content == "An apple."
    assert (message.model_extra or {}).get("reasoning_content") == THOUGHT
    assert answer.usage is not None and answer.usage.completion_tokens == 9
    assert answer.usage.completion_tokens_details is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens == 7


def test_databricks_clients_get_databricks_reasoning_shape(
    served: tuple[HTTPServer, _Provider],
) -> None:
    server, _ = served
    w = WorkspaceClient(host=server.url, token="unused", auth_type="pat")
    answer = w.serving_endpoints.query(
        name="ext-reasoner",
        messages=[ChatMessage(role=ChatMessageRole.USER, content="Name a fruit.")],
    )
    assert answer.choices is not None and answer.choices[0].message is not None
    assert answer.choices[0].message.content == [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": THOUGHT}]},
        {"type": "text", "text": "An apple."},
    ]
    with server.client() as http:
        raw = http.post("/serving-endpoints/ext-reasoner/invocations",
                        json={"messages": [{"role": "user", "content": "Name a fruit."}]})
    assert raw.status_code == 200, raw.text
    assert raw.json()["usage"]["completion_tokens_details"] == {"reasoning_tokens": 7}


def test_the_inference_table_keeps_the_reasoning(served: tuple[HTTPServer, _Provider]) -> None:
    import time

    import pyarrow.parquet as pq

    server, _ = served
    with server.client() as http:
        assert http.post("/serving-endpoints/ext-reasoner/invocations", json={
            "messages": [{"role": "user", "content": "Name a fruit."}]}).status_code == 200
    folder = server.workdir / "inference"
    deadline = time.monotonic() + 60

    def databricks_rows() -> list[dict[str, object]]:  # this request's: Databricks' shape
        files = sorted(Path(folder).rglob("*.parquet"))
        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
        return [r for r in rows if '"type": "reasoning"' in str(r["response"])]

    logged = databricks_rows()
    while time.monotonic() < deadline and not logged:  # written by the table's flush
        time.sleep(0.5)
        logged = databricks_rows()
    assert logged, "no inference table row of the invocations request"
    assert (logged[-1]["output_token_count"], logged[-1]["reasoning_token_count"]) == (9, 7)
    response = json.loads(str(logged[-1]["response"]))
    assert response["usage"]["completion_tokens_details"] == {"reasoning_tokens": 7}
    assert response["choices"][0]["message"]["content"][0]["type"] == "reasoning"


def test_a_streamed_answer_keeps_the_reasoning_apart(
    served: tuple[HTTPServer, _Provider],
) -> None:
    server, _ = served
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="ext-reasoner", messages=[{"role": "user", "content": "Name a fruit."}],
        stream=True, stream_options={"include_usage": True},
    )
    content, thoughts, usage = [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            thoughts.append((choice.delta.model_extra or {}).get("reasoning_content") or "")
    assert "".join(content) == "An apple."
    assert "".join(thoughts) == THOUGHT
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 7
