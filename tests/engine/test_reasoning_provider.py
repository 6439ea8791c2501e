"""A reasoning model behind an external provider (a local fake that answers in Databricks'
shape for reasoning models, and in the OpenAI-compatible one): ``ai_query`` gets the answer
alone, typed by ``returnType``; the reasoning is kept apart for HTTP answers."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ai_query.catalog import Catalog
from ai_query.engine.backends.backend import Completion
from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.local import LocalEngine
from ai_query.options import CallOptions, ModelParameters
from ai_query.serving.http import responses
from tests.servers import reply_json

THOUGHT = "The user asks for a fruit; apples are common."


class _Provider(http.server.ThreadingHTTPServer):
    """Answers every chat request with reasoning, then the answer (``shape``: databricks or
    openai); JSON when the request asks for a schema."""

    def __init__(self, shape: str) -> None:
        self.shape = shape
        self.bodies: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Provider

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.server.bodies.append(body)
        answer = '{"label": "apple"}' if "response_format" in body else "An apple."
        if body.get("stream"):
            self._stream(answer)
            return
        if self.server.shape == "databricks":
            message: dict[str, Any] = {"role": "assistant", "content": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": THOUGHT}]},
                {"type": "text", "text": answer},
            ]}
        else:
            message = {"role": "assistant", "content": answer, "reasoning_content": THOUGHT}
        payload = json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": "reasoner",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14,
                      "completion_tokens_details": {"reasoning_tokens": 7}},
        }).encode()
        reply_json(self, 200, payload)

    def _stream(self, answer: str) -> None:
        """Server-sent events: the reasoning in two deltas (``reasoning_content``), then the
        answer, then the usage."""
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"reasoning_content": THOUGHT[:20]}, {"reasoning_content": THOUGHT[20:]}]
        deltas += [{"content": answer}]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "reasoner"}
        for i, delta in enumerate(deltas):
            finish = "stop" if i == len(deltas) - 1 else None
            event = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        usage = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14,
                 "completion_tokens_details": {"reasoning_tokens": 7}}
        self.wfile.write(b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode()
                         + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(params=["databricks", "openai"])
def provider(request: pytest.FixtureRequest) -> Iterator[_Provider]:
    server = _Provider(request.param)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _engine(server: _Provider) -> LocalEngine:
    entity = {"external_model": {
        "name": "reasoner", "provider": "openai-compatible", "task": "llm/v1/chat",
        "openai_config": {"openai_api_base": f"http://127.0.0.1:{server.server_port}/v1",
                          "openai_api_key_plaintext": "sk-test"},
    }}
    catalog = Catalog.from_data([{"name": "ext-reasoner", "config": {"served_entities": [entity]}}])
    return LocalEngine(catalog, memo_entries=0)


def test_ai_query_gets_the_answer_alone_typed_by_return_type(provider: _Provider) -> None:
    engine = _engine(provider)
    text = align_results(engine.run(request_batch(
        ["Name a fruit.", None], CallOptions(endpoint="ext-reasoner"),
    )), 2)
    assert text.column("result").to_pylist() == ["An apple.", None]
    assert text.column("error").to_pylist() == [None, None]
    typed = align_results(engine.run(request_batch(
        ["Name a fruit."], CallOptions(endpoint="ext-reasoner", return_type="STRUCT<label: STRING>"),
    )), 1)
    assert typed.column("error").to_pylist() == [None]
    assert typed.column("result").to_pylist() == [{"label": "apple"}]
    assert "reasoning_effort" not in provider.bodies[-1]
    align_results(engine.run(request_batch(["Name a fruit."], CallOptions(
        endpoint="ext-reasoner", model_parameters=ModelParameters(reasoning_effort="low"),
    ))), 1)
    assert provider.bodies[-1]["reasoning_effort"] == "low"


def test_http_answers_keep_the_reasoning_apart_and_count_its_tokens() -> None:
    done = Completion("An apple.", 5, 9, "stop", reasoning=THOUGHT, reasoning_tokens=7)
    body = responses.chat("r1", "ext-reasoner", [done])
    assert body["choices"][0]["message"] == {
        "role": "assistant", "content": "An apple.", "reasoning_content": THOUGHT,
    }
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 7}
    databricks = responses.chat("r1", "ext-reasoner", [done], databricks=True)
    assert databricks["choices"][0]["message"] == {"role": "assistant", "content": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": THOUGHT}]},
        {"type": "text", "text": "An apple."},
    ]}
    plain = responses.chat("r2", "m", [Completion("Hi", 1, 1, "stop")], databricks=True)
    assert plain["choices"][0]["message"] == {"role": "assistant", "content": "Hi"}
    assert "completion_tokens_details" not in plain["usage"]


def test_the_backend_keeps_the_reasoning_apart_from_the_answer(provider: _Provider) -> None:
    import asyncio

    from ai_query.engine.backends.backend import GenerationRequest
    from ai_query.engine.backends.external import ExternalBackend
    from ai_query.tasks import Task

    model = _engine(provider).catalog.get("ext-reasoner").config.served_entities[0].external_model
    backend = ExternalBackend(model)
    request = GenerationRequest(task=Task.CHAT, params=ModelParameters(max_tokens=32))

    async def ask() -> Completion:
        try:
            return await backend.complete("Name a fruit.", request)
        finally:
            await backend.close()

    done = asyncio.run(ask())
    assert (done.text, done.reasoning) == ("An apple.", THOUGHT)
    assert (done.completion_tokens, done.reasoning_tokens) == (9, 7)


def test_sql_counts_reasoning_tokens_apart(provider: _Provider) -> None:
    import ai_query

    engine = _engine(provider)
    result = align_results(engine.run(request_batch(
        ["Name a fruit.", None], CallOptions(endpoint="ext-reasoner"),
    )), 2)
    assert result.column("reasoning_tokens").to_pylist() == [7, 0]
    assert result.column("completion_tokens").to_pylist() == [9, 0]
    con = ai_query.connect(engine=engine)
    rows = con.sql(
        "SELECT ai_query('ext-reasoner', p) FROM (VALUES ('a'), ('b'), ('c')) t(p)"
    ).fetchall()
    assert rows == [("An apple.",)] * 3
    assert (con.progress.completion_tokens, con.progress.reasoning_tokens) == (27, 21)
