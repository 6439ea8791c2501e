"""``ai-query serve --engine`` and ``--engine-factory`` (bring your own Engine), as users run
them: through the CLI, which the launcher spawns."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.flight.client import FlightEngineClient
from ai_query.engine.process.launcher import start_server_process
from ai_query.options import CallOptions

CHAT = "smollm2-135m-instruct"


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai_query", "serve", "--no-http", "--port", "0",
         "--preload", "none", *args],
        capture_output=True, text=True, timeout=120,
    )


def test_a_server_serves_the_engine_a_factory_builds() -> None:
    factory = "ai_query.testing:echo_engine"
    server = start_server_process(preload=False, engine_factory=factory)
    client = FlightEngineClient([server.url])
    try:
        texts = ["a", None, "b c"]
        out = align_results(client.run(request_batch(texts, CallOptions(endpoint=CHAT))), 3)
        assert out.column("result").to_pylist() == texts
        assert client.health()[server.url]["engine"] == factory
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("--engine", "echo"),
                     "unknown engine 'echo'; expected one of vllm, deterministic", id="engine"),
        pytest.param(("--engine-factory", "ai_query.no_such:make"),
                     "cannot import ai_query.no_such", id="factory-module"),
        pytest.param(("--engine-factory", "ai_query.testing"),
                     "is not module:callable", id="factory-form"),
    ],
)
def test_serve_refuses_what_it_cannot_host(args: tuple[str, ...], message: str) -> None:
    out = _serve(*args)
    assert out.returncode == 1, out.stderr
    assert message in out.stderr


def test_the_test_only_option_is_gone() -> None:
    out = _serve("--batch-delay", "1")
    assert out.returncode == 2 and "--batch-delay" in out.stderr
