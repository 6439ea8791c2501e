"""Our HTTP server as a subprocess on 127.0.0.1, for the server tests and their fixtures."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port, start, stop, wait_http

#: The provider's API key: a secret the front server must forward and never show.
PROVIDER_SECRET = "sk-provider-SECRET-4f1d9c"
#: Bearer tokens of the front (deterministic) server: alice administers it, carol may create
#: endpoints (and use secret scope ``team``), bob and dave may only query what they are granted.
TOKENS: dict[str, object] = {
    "tok-alice": {"principal": "alice", "groups": ["admins"]},
    "tok-bob": "bob",
    "tok-carol": {"principal": "carol", "groups": ["can_create_endpoints"],
                  "secret_scopes": ["team"]},
    "tok-dave": "dave",
}


class HTTPServer:
    """``ai-query serve`` (the console script users run) in a subprocess, HTTP on a free port."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.starts = 0
        self.args = [str(Path(sys.executable).with_name("ai-query")), "serve",
                     "--http-port", str(self.port), "--port", "0", *args]
        self.env = env or {}
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> HTTPServer:
        self.starts += 1
        self.proc = start(self.args, self.workdir / f"server{self.starts}.log", self.env)
        wait_http(f"{self.url}/health", self.proc, timeout=timeout)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.workdir.glob("server*.log"))

    def client(self, token: str | None = None, timeout: float = 120.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
