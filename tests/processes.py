"""Real processes for tests: users' script files, process trees, bounded waits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int, start: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0] != "Z" and int(fields[19]) == start


def wait_gone(tree: dict[int, int], timeout: float = 10.0) -> list[int]:
    """PIDs of ``tree`` still alive after ``timeout`` seconds (empty: all gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid, start in tree.items() if alive(pid, start)]
        if not left:
            return []
        time.sleep(0.2)
    return [pid for pid, start in tree.items() if alive(pid, start)]


def shell_environment() -> dict[str, str]:
    """This process's environment without the ``LD_PRELOAD`` it may have taken from an engine
    built in it (vLLM's libgomp, ai_query's tcmalloc): what a user's shell starts commands with."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def run_script(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    """A user's script file, run as ``python file.py`` (no ``__main__`` guard), from
    :func:`shell_environment`."""
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(body))
    env = shell_environment()
    return subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
    )


def read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:  # bounded by the script, which prints then sleeps
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"the script exited ({proc.wait()}) without printing {prefix!r}")


def engine_cores(root: int) -> list[int]:
    """PIDs of vLLM EngineCore processes under ``root`` (they name themselves
    ``VLLM::EngineCore``; found in the tree, killed by PID)."""
    from ai_query.engine.process.lifeline import descendants

    found = []
    for pid in descendants(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"EngineCore" in cmdline:
            found.append(pid)
    return found
