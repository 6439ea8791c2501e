"""Starting and stopping real server processes for tests (127.0.0.1 only, bounded waits)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.processes import shell_environment

_GIVEN: set[int] = set()
"""Ports this process has handed out: a server may not have bound one yet when the next is
asked for, and the OS can offer the same free port again."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now and not handed out before by this
    process."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise RuntimeError("no free port on 127.0.0.1 that was not handed out already")


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    """Poll ``url`` until it answers 200, the process dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered"
                               f"{_log_tail(proc)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s{_log_tail(proc)}")


class _Server(subprocess.Popen[bytes]):
    """A server process that knows where its output goes, so a failed start can show it."""

    log: Path | None = None


def _log_tail(proc: subprocess.Popen[bytes], lines: int = 40) -> str:
    log = getattr(proc, "log", None)
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return "; its log ends:\n" + "\n".join(tail)


def start(
    args: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server process with its output in ``log``, from a user's shell's environment."""
    full_env = {
        **shell_environment(),
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        **(env or {}),
    }
    handle = log.open("wb")
    proc = _Server(list(args), stdout=handle, stderr=subprocess.STDOUT, env=full_env)
    proc.log = log
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Terminate a server process, killing it if it does not stop in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def vllm_api_server(model_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """vLLM's own OpenAI-compatible server for ``model_dir`` (eager, our default dtype, small KV
    cache)."""
    from ai_query.engine.vllm.model import engine_defaults

    return start(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir),
            "--served-model-name",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            engine_defaults("generate")["dtype"],
            "--enforce-eager",
            "--max-model-len",
            "2048",
            "--max-num-seqs",
            "256",
            "--max-num-batched-tokens",
            "4096",
            "--disable-log-stats",
        ],
        log,
    )


def reply_json(handler: Any, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
    """Answer an ``http.server`` request with a JSON body (the tests' fake providers)."""
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)
