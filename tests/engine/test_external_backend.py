"""The external backend against vLLM's own OpenAI-compatible server on 127.0.0.1, directly and
behind a proxy that answers 429 with Retry-After."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from ai_query.catalog import Catalog
from ai_query.engine.backends.registry import shared_backend
from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.local import LocalEngine
from ai_query.options import CallOptions, ModelParameters
from tests.servers import free_port, reply_json, stop, vllm_api_server, wait_http

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ai_query.engine.backends.bundled import smollm2_dir

    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    proc = vllm_api_server(smollm2_dir(), port, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=400)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


class _Throttle(http.server.ThreadingHTTPServer):
    """Answers the first ``refusals`` POSTs with 429 + Retry-After, then forwards to vLLM; with
    ``refuse_logprobs``, answers 400 to a request asking for log-probabilities (as providers
    without them do)."""

    def __init__(self, upstream: str, refusals: int, refuse_logprobs: bool = False) -> None:
        self.upstream = upstream
        self.refusals = refusals
        self.refuse_logprobs = refuse_logprobs
        self.log: list[tuple[float, int]] = []
        super().__init__(("127.0.0.1", 0), _ThrottleHandler)


class _ThrottleHandler(http.server.BaseHTTPRequestHandler):
    server: _Throttle

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.server.refuse_logprobs and b'"logprobs"' in body:
            self.server.log.append((time.monotonic(), 400))
            payload = b'{"error": {"message": "logprobs is not supported", "type": "invalid"}}'
            reply_json(self, 400, payload)
            return
        if len(self.server.log) < self.server.refusals:
            self.server.log.append((time.monotonic(), 429))
            payload = b'{"error": {"message": "slow down", "type": "rate_limit"}}'
            reply_json(self, 429, payload, {"Retry-After": "1"})
            return
        self.server.log.append((time.monotonic(), 200))
        req = urllib.request.Request(
            self.server.upstream + self.path.removeprefix("/v1"),
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            payload = resp.read()
        reply_json(self, 200, payload)

    def log_message(self, *args: Any) -> None:
        pass


def _catalog(base: str, retries: int = 5) -> Catalog:
    return Catalog.from_data(
        [
            {
                "name": "ext-chat",
                "config": {
                    "served_entities": [
                        {
                            "external_model": {
                                "name": "smollm2",
                                "provider": "openai-compatible",
                                "task": "llm/v1/chat",
                                "max_retries": retries,
                                "openai_config": {
                                    "openai_api_base": base,
                                    "openai_api_key": "{{secrets/test/vllm}}",
                                },
                            }
                        }
                    ]
                },
            }
        ]
    )


def _run(engine: LocalEngine, prompts: list[str | None], **opts: Any) -> pa.RecordBatch:
    return align_results(
        engine.run(request_batch(prompts, CallOptions(endpoint="ext-chat", **opts))), len(prompts)
    )


def test_external_chat_and_structured(vllm_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_QUERY_SECRET_TEST_VLLM", "sk-test")
    engine = LocalEngine(_catalog(vllm_server), memo_entries=0)
    out = _run(
        engine,
        ["What is 2+2?", None, "Name a fruit."],
        model_parameters=ModelParameters(max_tokens=12),
    )
    texts = out.column("result").to_pylist()
    assert texts[0] and texts[2] and texts[1] is None
    assert out.column("prompt_tokens").to_pylist()[0] > 0
    typed = _run(
        engine,
        ["Classify the sentiment of: I love it"],
        return_type="STRUCT<label: STRING>",
        model_parameters=ModelParameters(max_tokens=64),
    )
    assert typed.column("error").to_pylist() == [None]
    assert isinstance(typed.column("result")[0].as_py()["label"], str)


def test_429_is_retried_after_retry_after(
    vllm_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI_QUERY_SECRET_TEST_VLLM", "sk-test")
    proxy = _Throttle(vllm_server, refusals=2)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        catalog = _catalog(f"http://127.0.0.1:{proxy.server_address[1]}/v1")
        engine = LocalEngine(catalog, memo_entries=0)
        out = _run(engine, ["Say hello."], model_parameters=ModelParameters(max_tokens=6))
        assert out.column("error").to_pylist() == [None] and out.column("result")[0].as_py()
        statuses = [s for _, s in proxy.log]
        assert statuses == [429, 429, 200]
        gaps = [b[0] - a[0] for a, b in zip(proxy.log, proxy.log[1:])]
        assert min(gaps) >= 0.9  # waited at least the Retry-After second each time
        backend = shared_backend(catalog.get("ext-chat").config.served_entities[0])
        assert backend.retries == 2  # type: ignore[attr-defined]
    finally:
        proxy.shutdown()


def test_429_past_the_retry_bound_is_a_row_error(
    vllm_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI_QUERY_SECRET_TEST_VLLM", "sk-test")
    proxy = _Throttle(vllm_server, refusals=100)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        engine = LocalEngine(
            _catalog(f"http://127.0.0.1:{proxy.server_address[1]}/v1", retries=1), memo_entries=0
        )
        out = _run(engine, ["a", None], model_parameters=ModelParameters(max_tokens=4))
        assert out.column("result").to_pylist() == [None, None]
        error = out.column("error").to_pylist()[0]
        assert "failed after 1 retries" in error and "429" in error
        assert "sk-test" not in error
    finally:
        proxy.shutdown()


def test_vllm_only_parameters_travel_as_extra_fields() -> None:
    from ai_query.catalog import ExternalModel
    from ai_query.engine.backends.backend import GenerationRequest
    from ai_query.engine.backends.external import ExternalBackend
    from ai_query.options import ModelParameters
    from ai_query.tasks import Task

    def arguments(provider: str, params: ModelParameters) -> dict:
        backend = ExternalBackend(ExternalModel(name="m", provider=provider, task=Task.CHAT))
        return backend._arguments(GenerationRequest(task=Task.CHAT, params=params))

    plain = arguments("openai-compatible", ModelParameters())
    assert "extra_body" not in plain and "repetition_penalty" not in plain
    params = ModelParameters(top_k=0, repetition_penalty=1.1)
    assert arguments("openai-compatible", params)["extra_body"] == {
        "top_k": 0,
        "repetition_penalty": 1.1,
    }
    # OpenAI itself refuses fields it does not know: the penalty stays home.
    assert "extra_body" not in arguments("openai", ModelParameters(repetition_penalty=1.1))


def test_a_provider_without_label_probabilities_generates_the_label(
    vllm_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the README says: an external chat endpoint answers a scored choice with the label it
    generates under the choice, and no log-probabilities (so task functions give a NULL
    confidence)."""
    import json

    from ai_query.sql.task_functions import choice_format

    monkeypatch.setenv("AI_QUERY_SECRET_TEST_VLLM", "sk-test")
    engine = LocalEngine(_catalog(vllm_server), memo_entries=0)
    labels = ["billing", "shipping", "login"]
    out = _run(
        engine,
        ["I was charged twice.", "Where is my parcel?"],
        response_format=choice_format(labels, prefix="The label is", scores=True),
        model_parameters=ModelParameters(max_tokens=8),
    )
    assert out.column("error").to_pylist() == [None, None]
    for answer in map(json.loads, out.column("result").to_pylist()):
        assert answer["label"] in labels and answer["logprobs"] is None


FRUIT = json.dumps({
    "type": "json_schema",
    "json_schema": {"name": "fruit", "schema": {
        "type": "object", "properties": {"fruit": {"type": "string"}}, "required": ["fruit"],
    }},
    "returnType": "STRUCT<fruit: STRING>",
    "confidence": True,
})


@pytest.mark.parametrize("refuses", [False, True], ids=["gives-logprobs", "refuses-logprobs"])
def test_field_confidence_from_a_providers_token_probabilities(
    vllm_server: str, monkeypatch: pytest.MonkeyPatch, refuses: bool
) -> None:
    """A provider that returns the generated tokens' log-probabilities (vLLM's server, as
    OpenAI's API does) gives each field its probability; one that refuses the parameter is
    asked again without it: the same answer, a NULL confidence, no error."""
    monkeypatch.setenv("AI_QUERY_SECRET_TEST_VLLM", "sk-test")
    proxy = _Throttle(vllm_server, refusals=0, refuse_logprobs=refuses)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        engine = LocalEngine(_catalog(f"http://127.0.0.1:{proxy.server_port}/v1"), memo_entries=0)
        out = _run(
            engine, ["Name one fruit."], response_format=FRUIT,
            model_parameters=ModelParameters(max_tokens=32, temperature=0.0),
        )
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert out.column("error").to_pylist() == [None]
    answer = out.column("result")[0].as_py()
    assert isinstance(answer["response"]["fruit"], str)
    confidence = answer["confidence"]["fruit"]
    if refuses:
        assert confidence is None
        assert [status for _, status in proxy.log] == [400, 200]
    else:
        assert 0.0 < confidence <= 1.0
