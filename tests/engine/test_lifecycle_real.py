"""The engine as users meet it, with the real vLLM engine: a plain script, a killed engine
process, a killed parent, quiet output (slow; real processes, bounded waits)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ai_query.engine.process.lifeline import descendants
from ai_query.machine import this_machine
from tests.processes import engine_cores, read_line, run_script, wait_gone
from tests.servers import free_port, start, stop, wait_http

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"
AI_QUERY = str(Path(sys.executable).with_name("ai-query"))
#: What torch, vLLM and transformers print when they are not kept quiet.
NOISE = re.compile(r"torch|vllm|transformers|triton|warning|safetensors|numa", re.IGNORECASE)


def test_a_plain_script_answers_then_leaves_nothing_behind_when_killed(tmp_path: Path) -> None:
    proc = run_script(tmp_path, """
        import json, time
        import ai_query
        con = ai_query.connect()
        chat = con.sql("SELECT ai_query('smollm2-135m-instruct', 'Say hi',"
                       " modelParameters => {'max_tokens': 8}) AS a").fetchall()
        vec = con.sql("SELECT ai_query('all-minilm-l6-v2', 'hello') AS v").fetchall()
        typed = con.sql("SELECT ai_query('smollm2-135m-instruct', 'Rate this 1 to 5: great',"
                        " returnType => 'STRUCT<score: INT>') AS s").fetchall()
        print("answers", json.dumps([chat[0][0], len(vec[0][0]), typed[0][0]]), flush=True)
        time.sleep(300)
    """)
    try:
        chat, dims, typed = json.loads(read_line(proc, "answers "))
        assert isinstance(chat, str) and chat.strip()
        assert dims == 384
        assert isinstance(typed, dict) and isinstance(typed["score"], int)
        tree = descendants(proc.pid)
        cores = engine_cores(proc.pid)
        assert cores, "the script's engine processes should be running"
        # The machine's tcmalloc (scripts/setup.sh installs it) is in the chat model's engine
        # process and in the server, whose own thread runs the embeddings model; not in the
        # user's process.
        assert this_machine().tcmalloc, "no tcmalloc on this machine: run scripts/setup.sh"
        servers = [pid for pid in tree if b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(servers) == 1, servers
        for pid in [*cores, *servers]:
            assert "libtcmalloc" in Path(f"/proc/{pid}/maps").read_text(), pid
        assert "libtcmalloc" not in Path(f"/proc/{proc.pid}/maps").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_gone(tree) == [], "engine processes outlived the killed script"
    finally:
        proc.kill()


def test_a_killed_engine_fails_its_query_and_the_next_query_answers() -> None:
    import ai_query
    from ai_query.engine.process.embedded import EmbeddedEngine

    con = ai_query.connect()
    assert isinstance(con.engine, EmbeddedEngine)
    con.sql("CREATE TABLE t AS SELECT range AS id, 'Write a long story about item ' || range AS p"
            " FROM range(300)")
    assert con.sql(f"SELECT ai_query('{CHAT}', 'hi', modelParameters => {{'max_tokens': 2}})"
                   ).fetchall()[0][0]
    server = con.engine.server
    assert server is not None
    cores = engine_cores(server.pid)
    assert len(cores) == 1
    outcome: dict[str, Any] = {}

    def query() -> None:
        try:
            outcome["rows"] = con.sql(
                f"SELECT ai_query('{CHAT}', p, modelParameters => {{'max_tokens': 128}}) FROM t"
            ).fetchall()
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=query)
    thread.start()
    time.sleep(3)
    os.kill(cores[0], signal.SIGKILL)
    thread.join(timeout=60)
    assert not thread.is_alive(), "the query did not fail within 60 s of the engine's death"
    assert "rows" not in outcome
    message = str(outcome["error"])
    assert "vLLM engine for smollm2-135m-instruct died" in message, message
    assert "the next request restarts it" in message
    again = con.sql(f"SELECT ai_query('{CHAT}', 'Say hi', modelParameters => {{'max_tokens': 4}})"
                    ).fetchall()
    assert again[0][0]
    assert engine_cores(server.pid) and engine_cores(server.pid) != cores


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    text = body.decode()
    return status, (json.loads(text) if text.startswith("{") else text)


def test_serve_reports_a_dead_engine_then_recovers_and_leaves_nothing_when_killed(
    tmp_path: Path,
) -> None:
    from ai_query.engine.core.batch import align_results, request_batch
    from ai_query.engine.flight.client import FlightEngineClient
    from ai_query.options import CallOptions, ModelParameters

    flight_port, http_port = free_port(), free_port()
    proc = start([AI_QUERY, "serve", "--port", str(flight_port), "--http-port", str(http_port),
                  "--preload", CHAT, "--database", str(tmp_path / "endpoints.sqlite")],
                 tmp_path / "serve.log", env={"AI_QUERY_TIMINGS": str(tmp_path / "timings")})
    base = f"http://127.0.0.1:{http_port}"
    client = FlightEngineClient(f"grpc://127.0.0.1:{flight_port}")
    try:
        wait_http(f"{base}/health", proc, timeout=300)
        cores = engine_cores(proc.pid)
        assert len(cores) == 1
        # vLLM's CPU build spawns its engine process; the first one is the zygote that imported
        # vLLM while the server did (ai_query.engine.vllm.zygote); the restart spawns afresh.
        marks = [json.loads(line) for line in (tmp_path / "timings").read_text().splitlines()]
        assert [m["engine_pid"] for m in marks
                if m["step"] == "engine: process from the zygote"] == cores
        os.kill(cores[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (status := _get(f"{base}/health"))[0] != 503:
            assert time.monotonic() < deadline, f"health still says {status}"
            time.sleep(0.5)
        assert status[1]["endpoints"][CHAT] == "NOT_READY"
        assert status[1]["engines"][CHAT]["state"] == "DEAD"
        _, endpoint = _get(f"{base}/api/2.0/serving-endpoints/{CHAT}")
        assert endpoint["state"]["ready"] == "NOT_READY"
        deployment = endpoint["config"]["served_entities"][0]["state"]
        assert deployment["deployment"] == "DEPLOYMENT_RECOVERING"
        flight_health = client.health()[client.urls[0]]
        assert flight_health["status"] == "not_ready"
        assert flight_health["endpoint_states"][CHAT]["state"] == "DEAD"

        batch = request_batch(["Say hi"], CallOptions(
            endpoint=CHAT, model_parameters=ModelParameters(max_tokens=4)))
        out = align_results(client.run(batch), 1)  # the next batch restarts the engine
        assert out.column("result").to_pylist()[0]
        assert _get(f"{base}/health")[0] == 200
        assert client.health()[client.urls[0]]["engine_restarts"] == 1
        _, metrics = _get(f"{base}/metrics")
        assert f'ai_query_engine_restarts_total{{endpoint="{CHAT}"}} 1.0' in metrics

        tree = descendants(proc.pid)
        assert engine_cores(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_gone(tree) == [], "engine processes outlived the killed server"
    finally:
        client.close()
        stop(proc)


def test_the_cli_prints_no_third_party_noise(tmp_path: Path) -> None:
    result = subprocess.run(
        [AI_QUERY, "sql", f"SELECT ai_query('{CHAT}', 'Say hi', "
         "modelParameters => named_struct('max_tokens', 4)) AS answer"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "answer" in result.stdout
    noisy = [line for line in result.stderr.splitlines() if NOISE.search(line)]
    assert noisy == []
