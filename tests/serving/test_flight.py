"""The Flight engine server and client over real gRPC, in this process, deterministic backend.

Server processes (killed mid-batch, SIGTERM, restart) are in test_flight_process.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from ai_query.catalog import Catalog
from ai_query.config import parse_engine_urls
from ai_query.engine.backends.deterministic import DeterministicBackend
from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.flight.client import FlightEngineClient
from ai_query.engine.local import LocalEngine
from ai_query.engine.spec import EngineSpec, build_engine
from ai_query.errors import (
    AuthenticationError,
    ConfigError,
    EngineUnavailableError,
    RateLimitExceededError,
    SQLParseError,
    UnknownEndpointError,
)
from ai_query.options import CallOptions
from ai_query.serving.auth import TokenAuth
from ai_query.serving.flight import ServingFlightServer
from ai_query.testing import DelayedEngine, EchoEngine

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


def _engine() -> LocalEngine:
    return LocalEngine(Catalog.default(), backend_factory=DeterministicBackend)


@pytest.fixture
def server() -> Iterator[ServingFlightServer]:
    srv = ServingFlightServer(_engine(), description="deterministic")
    yield srv
    srv.shutdown()


@pytest.fixture
def two_servers() -> Iterator[list[ServingFlightServer]]:
    servers = [ServingFlightServer(_engine()) for _ in range(2)]
    yield servers
    for srv in servers:
        srv.shutdown()


def run(engine, requests, **opts):  # type: ignore[no-untyped-def]
    batch = request_batch(requests, CallOptions(**opts))
    return align_results(engine.run(batch), len(requests))


def test_chunks_of_one_batch_are_pipelined_on_one_stream(server) -> None:
    client = FlightEngineClient(server.url, chunk_rows=10)
    out = run(client, [f"r{i}" for i in range(95)], endpoint=CHAT)
    assert [r.split()[-1] for r in out.column("result").to_pylist()] == [f"r{i}" for i in range(95)]
    health = server.health()
    assert health["exchanges"] == 1 and health["batches"] == 10 and health["rows"] == 95


def test_batches_are_spread_over_servers(two_servers) -> None:
    client = FlightEngineClient([s.url for s in two_servers])
    out = run(client, [f"r{i}" for i in range(100)], endpoint=CHAT)
    assert out.column("row").to_pylist() == list(range(100))
    last_words = [r.split()[-1] for r in out.column("result").to_pylist()]
    assert last_words == [f"r{i}" for i in range(100)]
    rows = [s.health()["rows"] for s in two_servers]
    assert rows == [50, 50]


def test_call_errors_come_back_as_the_same_class_and_message(server) -> None:
    client = FlightEngineClient([server.url])
    with pytest.raises(UnknownEndpointError) as info:
        run(client, ["x"], endpoint="nope")
    assert str(info.value).startswith("unknown endpoint 'nope'; known endpoints: all-minilm-l6-v2")
    assert info.value.name == "nope"
    with pytest.raises(SQLParseError, match="bad returnType"):
        run(client, ["x"], endpoint=CHAT, return_type="STRUCT<a:")
    with pytest.raises(ConfigError):
        run(client, ["x"], endpoint=EMBED, return_type="STRUCT<a: INT>")
    assert server.health()["errors"] == 3


def test_auth_refused_without_the_token_and_accepted_with_it() -> None:
    srv = ServingFlightServer(_engine(), auth=[TokenAuth({"s3cret": "alice"})])
    try:
        with pytest.raises(AuthenticationError, match="refused the call \\(no token was sent\\)"):
            run(FlightEngineClient([srv.url], token=""), ["x"], endpoint=CHAT)
        with pytest.raises(AuthenticationError, match="wrong token"):
            run(FlightEngineClient([srv.url], token="guess"), ["x"], endpoint=CHAT)
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(flight.FlightClient(srv.url).do_action(flight.Action("healthcheck", b"")))
        out = run(FlightEngineClient([srv.url], token="s3cret"), ["x"], endpoint=CHAT)
        assert out.num_rows == 1 and srv.health()["auth"] is True
    finally:
        srv.shutdown()


def test_token_comes_from_the_environment(monkeypatch) -> None:
    srv = ServingFlightServer(_engine(), auth=[TokenAuth({"from-env": "ci"})])
    try:
        monkeypatch.setenv("AI_QUERY_TOKEN", "from-env")
        monkeypatch.setenv("AI_QUERY_ENGINE_URL", srv.url)
        client = build_engine(EngineSpec(kind="flight"))
        assert run(client, ["x"], endpoint=CHAT).num_rows == 1
    finally:
        srv.shutdown()


def test_health_and_catalog_actions(server) -> None:
    client = FlightEngineClient([server.url])
    status = client.health()[server.url]
    assert status["status"] == "ok" and status["engine"] == "deterministic"
    assert CHAT in status["endpoints"]
    assert client.catalog.names() == Catalog.default().names()  # fetched from the server
    actions = {a.type for a in flight.FlightClient(server.url).list_actions()}
    assert actions == {"healthcheck", "catalog"}


def test_catalog_action_drops_plaintext_keys() -> None:
    catalog = Catalog.from_data([{"name": "ext", "config": {"served_entities": [{"external_model": {
        "name": "m", "provider": "openai", "task": "llm/v1/chat",
        "openai_config": {"openai_api_base": "http://127.0.0.1:9/v1",
                          "openai_api_key_plaintext": "sk-very-secret"}}}]}}])
    srv = ServingFlightServer(LocalEngine(catalog, backend_factory=DeterministicBackend))
    try:
        fetched = FlightEngineClient([srv.url]).catalog
        config = fetched.get("ext").config.served_entities[0].external_model.openai_config
        assert config.openai_api_key_plaintext is None and config.openai_api_base
    finally:
        srv.shutdown()


def test_unreachable_servers_fail_with_a_clear_bounded_error() -> None:
    client = FlightEngineClient(["grpc://127.0.0.1:1", "grpc://127.0.0.1:2"], retry_delay=0.05)
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError) as info:
        run(client, ["x", "y"], endpoint=CHAT)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "after 4 attempts" in message
    assert "grpc://127.0.0.1:1" in message and "grpc://127.0.0.1:2" in message


def test_a_dead_address_among_live_ones_is_skipped(server) -> None:
    client = FlightEngineClient([server.url, "grpc://127.0.0.1:1"], retry_delay=0.05)
    for _ in range(3):
        out = run(client, [f"r{i}" for i in range(10)], endpoint=CHAT)
        assert out.column("error").null_count == 10
    assert server.health()["rows"] == 30


def test_rate_limited_answers_are_retried_after_the_wait() -> None:
    calls = {"n": 0}

    class Limited(EchoEngine):
        def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RateLimitExceededError("rate limit of endpoint 'x' exceeded", retry_after=0.3)
            return super().run(batch)

    srv = ServingFlightServer(Limited())
    try:
        started = time.monotonic()
        out = run(FlightEngineClient([srv.url]), ["a", "b"], endpoint=CHAT)
        assert out.column("result").to_pylist() == ["a", "b"]
        assert time.monotonic() - started >= 0.3 and calls["n"] == 2
    finally:
        srv.shutdown()


def test_one_outage_seen_by_calls_in_flight_together_backs_off_once() -> None:
    """Calls in flight together when a server fails report one outage: its back-off starts at
    ``retry_delay`` (not doubled per call), so it gets rows again soon after it recovers."""
    broken = threading.Event()
    broken.set()

    class Flaky(EchoEngine):
        def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
            if broken.is_set():
                time.sleep(0.3)  # every call's exchange is in flight before the first fails
                raise EngineUnavailableError("engine restarting")
            return super().run(batch)

    flaky, good = ServingFlightServer(Flaky()), ServingFlightServer(EchoEngine())
    try:
        client = FlightEngineClient([flaky.url, good.url], retry_delay=0.5, max_retry_delay=60)
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda i: run(client, [f"{i}a", f"{i}b"], endpoint=CHAT),
                                 range(8)))
        assert [o.column("result").to_pylist() for o in outs] == [
            [f"{i}a", f"{i}b"] for i in range(8)
        ]
        assert flaky.health()["errors"] >= 3  # one outage, seen by several calls
        broken.clear()
        time.sleep(1.0)  # past retry_delay; 3 escalations would be 2 s
        assert run(client, ["x", "y"], endpoint=CHAT).column("result").to_pylist() == ["x", "y"]
        assert flaky.health()["rows"] == 1
    finally:
        flaky.shutdown()
        good.shutdown()


def test_shutdown_lets_in_flight_batches_finish() -> None:
    srv = ServingFlightServer(DelayedEngine(_engine(), 0.5))
    client = FlightEngineClient([srv.url])
    out: dict[str, pa.RecordBatch] = {}
    thread = threading.Thread(
        target=lambda: out.setdefault("r", run(client, ["a", "b"], endpoint=CHAT))
    )
    thread.start()
    while srv.health()["active_exchanges"] == 0:
        time.sleep(0.01)
    srv.shutdown()  # returns once the exchange has been answered
    thread.join(timeout=5)
    assert out["r"].num_rows == 2 and out["r"].column("error").null_count == 2


def test_echo_engine_returns_requests() -> None:
    srv = ServingFlightServer(EchoEngine())
    try:
        texts = ["x" * 200] * 5000 + [None]
        out = run(FlightEngineClient([srv.url], chunk_rows=1000), texts, endpoint=CHAT)
        assert out.column("result").to_pylist() == texts
        assert np.all(out.column("row").to_numpy() == np.arange(len(texts)))
    finally:
        srv.shutdown()


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        pytest.param("", "no engine server address", id="empty"),
        pytest.param("http://h:1", "is not grpc://host:port", id="scheme"),
        pytest.param(["grpc://hostonly"], "is not grpc://host:port", id="port"),
    ],
)
def test_bad_addresses(urls, message, monkeypatch) -> None:
    monkeypatch.delenv("AI_QUERY_ENGINE_URL", raising=False)
    with pytest.raises(ConfigError, match=message):
        FlightEngineClient(urls)


def test_addresses_from_a_comma_list() -> None:
    assert parse_engine_urls(" grpc://a:1, grpc://b:2 ") == ("grpc://a:1", "grpc://b:2")
