"""Browser security headers on every HTTP response: the UI's page and assets, the API's answers
and its errors.

:class:`SecurityHeaders` is a plain ASGI middleware: it edits the ``http.response.start``
message and passes the body through untouched, so streamed answers (server-sent events, the SQL
editor's JSON lines) stream as before. The policy allows only the server's own scripts, styles
and API (no inline script or ``style=`` attribute, no framing, no plugins), which is all the UI
uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from inspect import isawaitable
from typing import Any

from fastapi import Request
from starlette.datastructures import MutableHeaders

#: The Content-Security-Policy of every response.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: Every response's browser security headers (they replace any a route set).
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class SecurityHeaders:
    """ASGI middleware: adds :data:`SECURITY_HEADERS` to every HTTP response."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, adding the headers to its response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_secured)
        except Exception as exc:
            # Starlette answers an unexpected error from outside every middleware, so its 500
            # would go out bare: answer it here, with the app's own handler, instead.
            handler = scope["app"].exception_handlers.get(Exception) if "app" in scope else None
            if started or handler is None:
                raise
            response = handler(Request(scope), exc)
            if isawaitable(response):
                response = await response
            await response(scope, receive, send_secured)
