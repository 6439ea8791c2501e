"""No process of ours outlives its parent, even after SIGKILL (real processes, bounded waits)."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from ai_query.engine.process.lifeline import ReadyReader, ReadyReport, descendants, report_ready
from tests.processes import read_line, run_script, wait_gone


def test_the_reaper_kills_an_engine_host_s_children_after_sigkill(tmp_path: Path) -> None:
    proc = run_script(tmp_path, """
        import subprocess, time
        from ai_query.engine.process.lifeline import start_reaper
        start_reaper()
        child = subprocess.Popen(["sleep", "300"])   # stands for vLLM's EngineCore
        time.sleep(1.5)                              # the reaper notes it within 0.5 s
        print("child", child.pid, flush=True)
        time.sleep(300)
    """)
    try:
        child = int(read_line(proc, "child "))
        tree = descendants(proc.pid)
        assert child in tree
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_gone(tree) == []
    finally:
        proc.kill()


def test_a_private_server_exits_when_its_user_is_killed(tmp_path: Path) -> None:
    proc = run_script(tmp_path, """
        import time
        from ai_query.engine.process.embedded import EmbeddedEngine
        from ai_query.engine.core.batch import request_batch
        from ai_query.options import CallOptions
        engine = EmbeddedEngine(engine_kind="deterministic")
        out = engine.run(request_batch(["hi"], CallOptions(endpoint="smollm2-135m-instruct")))
        print("server", engine.server.pid, out.num_rows, engine.server.log_path.parent,
              flush=True)
        time.sleep(300)
    """)
    try:
        server_pid, rows, workdir = read_line(proc, "server ").split()
        assert rows == "1" and Path(workdir).is_dir()
        tree = descendants(proc.pid)
        assert int(server_pid) in tree
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_gone(tree) == []
        assert not Path(workdir).exists()  # the server removed its files on the way out
    finally:
        proc.kill()


def test_a_readiness_report_crosses_the_lifeline_whole_or_in_pieces() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = ReadyReader(ours)
        assert reader.poll(timeout=0.01) is None
        line = ReadyReport(flight_port=8815, http_port=None).to_line()
        theirs.sendall(line[:7])
        assert reader.poll(timeout=1) is None
        theirs.sendall(line[7:])
        assert reader.poll(timeout=1) == ReadyReport(flight_port=8815, http_port=None)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        report_ready(theirs.fileno(), ReadyReport(flight_port=41000, http_port=8000))
        assert ReadyReader(ours).poll(timeout=1) == ReadyReport(flight_port=41000, http_port=8000)


def test_a_lifeline_that_ends_or_carries_no_report_says_so() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        reader = ReadyReader(ours)
        theirs.close()  # the server exited before it listened
        assert reader.poll(timeout=1) is None and reader.closed
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"listening on grpc://127.0.0.1:8815;\n")
        with pytest.raises(ValueError):
            ReadyReader(ours).poll(timeout=1)
