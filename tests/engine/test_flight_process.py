"""Engine server processes (deterministic engine): a server killed mid-batch, SIGTERM, restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.flight.client import FlightEngineClient
from ai_query.engine.process.launcher import start_server_process
from ai_query.engine.process.lifeline import ReadyReport
from ai_query.errors import EngineUnavailableError
from ai_query.options import CallOptions

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"
#: The deterministic engine holding each batch a second: a test engine, served by ``ai-query
#: serve`` as any engine of one's own (``--engine-factory``).
SLOW = "ai_query.testing:delayed_engine(delay=1.0)"


def run(client: FlightEngineClient, requests: list[str | None]) -> pa.RecordBatch:
    batch = request_batch(requests, CallOptions(endpoint=CHAT))
    return align_results(client.run(batch), len(requests))


def _wait_busy(client: FlightEngineClient, url: str) -> None:
    deadline = time.monotonic() + 10
    while client.health()[url].get("active_exchanges", 0) == 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never got a batch")
        time.sleep(0.02)


def test_a_server_killed_mid_batch_loses_and_repeats_nothing() -> None:
    servers = [start_server_process(preload=False, engine_factory=SLOW) for _ in range(2)]
    try:
        client = FlightEngineClient([s.url for s in servers], chunk_rows=50, retry_delay=0.2)
        requests = [f"r{i}" for i in range(400)]
        out: dict[str, pa.RecordBatch] = {}
        thread = threading.Thread(target=lambda: out.setdefault("r", run(client, requests)))
        thread.start()
        _wait_busy(client, servers[0].url)
        servers[0].kill()
        thread.join(timeout=60)
        result = out["r"]
        assert result.column("row").to_pylist() == list(range(400))
        assert [r.split()[-1] for r in result.column("result").to_pylist()] == requests
        survivor = client.health()[servers[1].url]
        assert survivor["rows"] == 400  # its own half, then the dead server's half again
        assert client.health()[servers[0].url]["status"] == "unreachable"
    finally:
        for s in servers:
            s.stop(grace=5)


def test_sigterm_finishes_in_flight_batches_then_exits() -> None:
    server = start_server_process(preload=False, engine_factory=SLOW)
    client = FlightEngineClient([server.url], max_attempts=1)
    out: dict[str, pa.RecordBatch] = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", run(client, ["a", "b", "c"])))
    thread.start()
    _wait_busy(client, server.url)
    server.proc.terminate()
    thread.join(timeout=30)
    assert out["r"].num_rows == 3 and out["r"].column("error").null_count == 3
    assert server.proc.wait(timeout=30) == 0
    log = server.log_tail()
    assert "received SIGTERM" in log and "stopped" in log
    with pytest.raises(EngineUnavailableError, match=server.url):
        run(client, ["d"])


def test_client_reconnects_to_a_restarted_server() -> None:
    first = start_server_process(engine="deterministic", preload=False)
    port = int(first.url.rsplit(":", 1)[1])
    client = FlightEngineClient([first.url], retry_delay=0.5, max_attempts=20)
    assert run(client, ["a"]).num_rows == 1
    first.kill()
    second = None
    try:
        second_box: dict[str, object] = {}

        def restart() -> None:
            time.sleep(1.0)
            second_box["s"] = start_server_process(engine="deterministic", preload=False, port=port)

        thread = threading.Thread(target=restart)
        thread.start()
        result = run(client, ["b", "c"])  # fails, backs off, reconnects once the server is back
        thread.join()
        second = second_box["s"]
        assert [r.split()[-1] for r in result.column("result").to_pylist()] == ["b", "c"]
    finally:
        if second is not None:
            second.stop(grace=5)  # type: ignore[attr-defined]


def test_auth_refused_by_a_server_process() -> None:
    server = start_server_process(engine="deterministic", preload=False, token="t0ken")
    try:
        from ai_query.errors import AuthenticationError

        with pytest.raises(AuthenticationError, match="refused"):
            run(FlightEngineClient([server.url], token=""), ["x"])
        assert run(FlightEngineClient([server.url], token="t0ken"), ["x"]).num_rows == 1
        assert "t0ken" not in server.log_tail(200)
    finally:
        server.stop(grace=5)


def test_the_launcher_learns_the_port_from_the_server_s_report() -> None:
    server = start_server_process(engine="deterministic", preload=False)  # port 0: any free one
    try:
        assert server.ready is not None and server.ready.flight_port > 0
        assert server.ready == ReadyReport(flight_port=int(server.url.rsplit(":", 1)[1]))
        assert run(FlightEngineClient([server.url]), ["x"]).num_rows == 1
    finally:
        server.stop(grace=5)


def test_a_server_that_exits_before_it_is_ready_is_reported_with_its_log(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(EngineUnavailableError, match="exited with code 1") as info:
        start_server_process(missing, engine="deterministic", preload=False, startup_timeout=60)
    assert f"cannot read catalog {missing}" in str(info.value)  # the log's tail says why
