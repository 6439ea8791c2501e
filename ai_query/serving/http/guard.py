"""Requests fit for the open network: size, content type and nesting checked before any route.

:class:`RequestGuard` is a plain ASGI middleware (it sees the byte stream, so it can count
what a chunked upload really sends) in front of every ``POST``/``PUT``/``PATCH`` route, all of
which take JSON:

- a body over the limit is a 413, whether ``Content-Length`` says so or the bytes streamed do
  (``--max-body-bytes``, default 16 MiB; the management API's endpoint bodies are capped at
  :data:`MANAGEMENT_MAX_BODY_BYTES`, since they are stored and sent back on every list);
- a content type that is not JSON is a 415 (no content type is taken as JSON);
- JSON nested deeper than :data:`MAX_JSON_DEPTH` is a 400 naming the problem, found by a scan
  that never recurses (Python's ``json`` would raise ``RecursionError`` on 100k levels).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
from fastapi import Request
from starlette.datastructures import Headers

from ai_query.serving.http.problems import APIError, render
from ai_query.serving.logs import access_log

#: Default largest request body, in bytes.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Largest body of a management API request (an endpoint definition), in bytes.
MANAGEMENT_MAX_BODY_BYTES = 1024 * 1024
#: Deepest nesting of arrays and objects a JSON body may have.
MAX_JSON_DEPTH = 64

_METHODS = frozenset({"POST", "PUT", "PATCH"})
_MANAGEMENT_PREFIX = "/api/2.0/"
#: A JSON string, escapes included (unrolled so that long strings scan fast).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: Everything but brackets, deleted by ``bytes.translate``.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in ``body`` (0 for a scalar); no recursion."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def is_json_type(content_type: str) -> bool:
    """Whether a ``Content-Type`` names JSON (``application/json``, ``application/*+json``)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class RequestGuard:
    """ASGI middleware: refuses bodies too big (413), not JSON (415) or too deep (400)."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        """Largest body (bytes) of any request."""
        self.max_depth = max_depth
        """Deepest JSON nesting accepted."""

    def limit(self, path: str) -> int:
        """The largest body accepted on ``path``."""
        if path.startswith(_MANAGEMENT_PREFIX):
            return min(self.max_body_bytes, MANAGEMENT_MAX_BODY_BYTES)
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then hand it (body replayed) to the app."""
        if scope["type"] != "http" or scope["method"] not in _METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self.limit(scope["path"])
        content_type = headers.get("content-type")
        if content_type is not None and not is_json_type(content_type):
            await self._refuse(
                scope,
                receive,
                send,
                415,
                (
                    f"unsupported content type {content_type.split(';')[0].strip()!r}: "
                    "send the body as application/json"
                ),
            )
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, 413, _too_large(limit))
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before sending its body
            body += message.get("body", b"")
            if len(body) > limit:
                await self._refuse(scope, receive, send, 413, _too_large(limit))
                return
            if not message.get("more_body", False):
                break
        depth = json_depth(bytes(body)) if body else 0
        if depth > self.max_depth:
            await self._refuse(
                scope,
                receive,
                send,
                400,
                (
                    f"the request body nests JSON arrays and objects {depth} levels deep; "
                    f"at most {self.max_depth} are accepted"
                ),
            )
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, message: str
    ) -> None:
        request = Request(scope)
        access_log.info(
            "%s %s -> %d: %s",
            scope["method"],
            scope["path"],
            status,
            message,
            extra={"path": scope["path"], "status": status},
        )
        error = APIError(status, message)
        error.headers["Connection"] = "close"  # the unread rest of the body is not wanted
        await render(request, error)(scope, receive, send)


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
