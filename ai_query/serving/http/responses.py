"""Answer bodies in the OpenAI shape (which Databricks' foundation-model APIs also use)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ai_query.engine.backends.backend import Completion, CompletionChunk, Embedding


def _usage(prompt: int, completion: int, reasoning: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if reasoning:  # OpenAI's count of the completion tokens spent reasoning
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def _message(done: Completion, databricks: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": done.text}
    if done.tool_calls:
        message["content"] = done.text or None
        message["tool_calls"] = done.tool_calls
    if done.reasoning is not None and databricks:  # Databricks' reasoning models' shape
        message["content"] = [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": done.reasoning}]},
            {"type": "text", "text": done.text},
        ]
    elif done.reasoning is not None:  # apart from the answer, as vLLM's OpenAI server does
        message["reasoning_content"] = done.reasoning
    return message


def chat(
    request_id: str, model: str, done: Sequence[Completion], databricks: bool = False
) -> dict[str, Any]:
    """A ``chat.completion`` with one choice per completion; a reasoning model's reasoning in
    Databricks' shape (``content``: a ``reasoning`` part, then a ``text`` part) where
    ``databricks`` (the invocations route), else as ``reasoning_content``."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": _message(d, databricks), "finish_reason": d.finish_reason,
             "logprobs": None}
            for i, d in enumerate(done)
        ],
        "usage": _usage(done[0].prompt_tokens, sum(d.completion_tokens for d in done),
                        sum(d.reasoning_tokens for d in done)),
    }


def completion(
    request_id: str, model: str, done: Sequence[Completion], n: int = 1
) -> dict[str, Any]:
    """A ``text_completion`` with one choice per completion (``n`` per prompt, in order)."""
    prompt = sum(d.prompt_tokens for d in done[::n])
    return {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "text": d.text, "finish_reason": d.finish_reason, "logprobs": None}
            for i, d in enumerate(done)
        ],
        "usage": _usage(prompt, sum(d.completion_tokens for d in done)),
    }


def embeddings(model: str, done: Sequence[Embedding], encoding: str) -> dict[str, Any]:
    """An embeddings list; ``base64`` packs little-endian float32 (what the openai client reads)."""
    data = []
    for i, emb in enumerate(done):
        floats = np.asarray(emb.vector, dtype="<f4")
        vector: Any = floats.tolist()
        if encoding == "base64":
            vector = base64.b64encode(floats.tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(e.prompt_tokens for e in done)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def sse(data: Any) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class StreamAssembler:
    """Turns backend chunks into OpenAI stream events, and keeps the whole answer."""

    def __init__(self, request_id: str, model: str, *, chat: bool, usage: bool) -> None:
        self._chat = chat
        self._usage = usage
        self._id = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
        self._object = "chat.completion.chunk" if chat else "text_completion"
        self._model = model
        self._created = int(time.time())
        self._parts: list[str] = []
        self._thoughts: list[str] = []
        self._started = False
        self.finish_reason: str | None = None
        """Why generation stopped, once it has."""
        self.tool_calls: list[dict[str, Any]] | None = None
        """Tool calls of the answer, if any."""
        self.prompt_tokens = 0
        """Prompt tokens."""
        self.completion_tokens = 0
        """Generated tokens so far."""
        self.reasoning_tokens = 0
        """Of the generated tokens, those spent reasoning (where known)."""

    def _event(self, choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": self._id,
            "object": self._object,
            "created": self._created,
            "model": self._model,
            "choices": [choice] if choice is not None else [],
        }
        if usage is not None:
            data["usage"] = usage
        return sse(data)

    def _choice(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        if self._chat:
            return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        text = delta.get("content", "")
        return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

    def feed(self, chunk: CompletionChunk) -> Iterator[bytes]:
        """The events for one backend chunk."""
        self.prompt_tokens = chunk.prompt_tokens or self.prompt_tokens
        self.completion_tokens = max(self.completion_tokens, chunk.completion_tokens)
        self.reasoning_tokens = max(self.reasoning_tokens, chunk.reasoning_tokens)
        if self._chat and not self._started:
            self._started = True
            yield self._event(self._choice({"role": "assistant", "content": ""}, None))
        if chunk.reasoning and self._chat:  # vLLM's OpenAI-compatible field, as non-streamed
            self._thoughts.append(chunk.reasoning)
            yield self._event(self._choice({"reasoning_content": chunk.reasoning}, None))
        if chunk.text:
            self._parts.append(chunk.text)
            yield self._event(self._choice({"content": chunk.text}, None))
        if chunk.tool_calls:
            self.tool_calls = chunk.tool_calls
            calls = [{"index": i, **c} for i, c in enumerate(chunk.tool_calls)]
            yield self._event(self._choice({"tool_calls": calls}, None))
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            yield self._event(self._choice({}, chunk.finish_reason))

    def close(self) -> Iterator[bytes]:
        """The closing events: usage (when asked for) and ``[DONE]``."""
        if self._usage:
            usage = _usage(self.prompt_tokens, self.completion_tokens, self.reasoning_tokens)
            yield self._event(None, usage)
        yield b"data: [DONE]\n\n"

    def final(self) -> dict[str, Any]:
        """The whole answer as the non-streaming body (for the inference table)."""
        done = Completion(
            "".join(self._parts),
            self.prompt_tokens,
            self.completion_tokens,
            self.finish_reason,
            self.tool_calls,
            reasoning="".join(self._thoughts) or None,
            reasoning_tokens=self.reasoning_tokens,
        )
        request_id = self._id.split("-", 1)[1]
        if self._chat:
            return chat(request_id, self._model, [done])
        return completion(request_id, self._model, [done])
