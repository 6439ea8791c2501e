"""HTTP server processes shared by the server tests (started once per session, 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.serving.http_servers import PROVIDER_SECRET, TOKENS, HTTPServer


@pytest.fixture(scope="session")
def provider_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    """A deterministic server playing an OpenAI-compatible provider that wants an API key."""
    work = tmp_path_factory.mktemp("provider")
    (work / "tokens.json").write_text(json.dumps({PROVIDER_SECRET: "front-server"}))
    server = HTTPServer(work, "--engine", "deterministic", "--tokens-file",
                        str(work / "tokens.json")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def det_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    """The front server: deterministic engine, auth on, inference table, 2-second "minutes"."""
    work = tmp_path_factory.mktemp("front")
    (work / "tokens.json").write_text(json.dumps(TOKENS))
    server = HTTPServer(
        work, "--engine", "deterministic", "--tokens-file", str(work / "tokens.json"),
        "--database", str(work / "endpoints.sqlite"), "--inference-table", str(work / "inference"),
        "--inference-flush-seconds", "0.2", "--rate-limit-period-scale", str(2 / 60),
        env={"AI_QUERY_SECRET_PROVIDER_KEY": PROVIDER_SECRET},
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    """Our server on real vLLM with the bundled models, both models started."""
    work = tmp_path_factory.mktemp("vllm-front")
    server = HTTPServer(
        work, "--database", str(work / "endpoints.sqlite"),
        "--inference-table", str(work / "inference"), "--inference-flush-seconds", "0.2",
    ).start(timeout=400)
    try:
        with server.client(timeout=400) as c:  # both engines are up once these answer
            c.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "warm"})
            c.post("/v1/chat/completions", json={
                "model": "smollm2-135m-instruct", "max_tokens": 4,
                "messages": [{"role": "user", "content": "warm up"}]})
        yield server
    finally:
        server.stop()
