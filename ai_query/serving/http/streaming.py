"""A backend's stream, which lives on the engine loop, read from the HTTP server's loop.

A pump task on the engine loop iterates :meth:`Backend.stream` and hands each chunk to the
server's loop with ``call_soon_threadsafe``; the reader yields them. Closing the reader (the
client went away) cancels the pump, which cancels the model's request (vLLM aborts it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ai_query.engine.backends.backend import Backend, CompletionChunk, GenerationRequest
from ai_query.engine.core.loop import shared_loop


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


async def stream_chunks(
    backend: Backend, text: str, request: GenerationRequest
) -> AsyncGenerator[CompletionChunk, None]:
    """The chunks of ``backend.stream(text, request)``, as produced on the engine loop."""
    here = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    def put(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the server's loop closed: nobody reads
            here.call_soon_threadsafe(queue.put_nowait, item)

    async def pump() -> None:
        try:
            async for chunk in backend.stream(text, request):
                put(chunk)
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which raises it
            put(_Failed(exc))
        finally:
            put(_END)

    future = shared_loop().submit(pump())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        if not future.done():
            future.cancel()
