"""No process of ours outlives its parent, even after SIGKILL (real processes, bounded waits)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ai_query.engine.process.lifeline import descendants
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
