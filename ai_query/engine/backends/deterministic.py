"""A small deterministic backend for fast tests (no model, no threads, no randomness).

It answers like a model would in shape: text for chat and completions, JSON that fits the
schema for structured output, unit-length 384-dim vectors for embeddings, a row error for a
prompt over its context. It is not a substitute for the real-engine tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from ai_query.catalog import ServedEntity
from ai_query.engine.backends.backend import (
    Backend,
    ChoiceScores,
    Completion,
    CompletionChunk,
    Embedding,
    EmbeddingResult,
    GenerationRequest,
    RowFailure,
)
from ai_query.engine.backends.registry import default_backend_factory
from ai_query.engine.backends.tool_calls import (
    function_tools,
    make_tool_call,
    tool_call_schema,
    tool_calls_from_output,
)
from ai_query.engine.core.files import data_url_bytes, file_digest, image_parts, media_type
from ai_query.engine.process.supervision import EngineHealth, EngineState


class DeterministicBackend:
    """Answers from a hash of the request; counts its calls."""

    dims = 384
    """Embedding dimensions."""

    def __init__(self, entity: ServedEntity | None = None, *, max_context: int = 512) -> None:
        self.name = entity.served_name if entity is not None else "deterministic"
        self.max_context = max_context
        self.calls = 0
        """How many rows reached this backend."""

    def _check(self, text: str) -> int:
        tokens = len(text.split())
        if tokens > self.max_context:
            raise RowFailure(
                f"This model's maximum context length is {self.max_context} tokens; "
                f"the prompt has {tokens}"
            )
        return tokens

    async def complete(self, text: str, request: GenerationRequest) -> Completion:
        """A deterministic answer: JSON fitting the schema, or words derived from the text (and
        the type and digest of each image sent with it).

        With a conversation (``request.messages``) the text is the last message's content;
        a forced tool choice gets a tool call with arguments fitting the tool's schema.
        """
        self.calls += 1
        images = list(request.files)
        if request.messages:
            content = request.messages[-1].get("content")
            text = _content_text(content)
            images += _content_images(content)
        for data in images:  # the answer names each image it saw
            text = f"{text} [{media_type(data)} {file_digest(data)[:8]}]"
        tokens = self._check(text)
        await asyncio.sleep(0)
        limit = request.params.max_tokens or request.default_max_tokens
        forced = tool_call_schema(request.tools, request.tool_choice)
        if forced is not None:
            if request.tool_choice == "required":  # the first tool, arguments fitting it
                name, params = next(iter(function_tools(request.tools).items()))
                calls = [make_tool_call(name, _value_for(params, _seed(text)))]
                return Completion("", tokens, 8, "tool_calls", calls)
            answer = json.dumps(_value_for(forced, _seed(text)))
            calls = tool_calls_from_output(answer, request.tools, request.tool_choice)
            return Completion("", tokens, len(answer.split()), "stop", calls)
        if request.json_schema is not None:
            answer = json.dumps(_value_for(request.json_schema, _seed(text)))
        elif request.choice is not None:
            answer = request.choice[_seed(text) % len(request.choice)]
        elif request.json_object:
            answer = json.dumps({"answer": text[:20]})
        else:
            words = f"{self.name} says: {text}".split()
            answer = " ".join(words[:limit])
        return Completion(answer, tokens, len(answer.split()), "stop")

    async def score_choices(self, text: str, request: GenerationRequest) -> ChoiceScores:
        """The choice :meth:`complete` would answer scores -0.5, the others -2 to -2.4 (from the
        text's hash)."""
        assert request.choice is not None
        self.calls += 1
        tokens = self._check(text)
        await asyncio.sleep(0)
        seed = _seed(text)
        best = seed % len(request.choice)
        return ChoiceScores(
            [
                -0.5 if i == best else -2.0 - 0.1 * ((seed + i) % 5)
                for i in range(len(request.choice))
            ],
            tokens,
        )

    async def stream(self, text: str, request: GenerationRequest) -> AsyncIterator[CompletionChunk]:
        """:meth:`complete`'s answer, one word per chunk."""
        done = await self.complete(text, request)
        words = done.text.split(" ") if done.text else []
        for i, word in enumerate(words):
            yield CompletionChunk(word if i == 0 else " " + word, done.prompt_tokens, i + 1)
            await asyncio.sleep(0)
        yield CompletionChunk(
            "", done.prompt_tokens, done.completion_tokens, done.finish_reason, done.tool_calls
        )

    async def embed_many(self, texts: Sequence[str]) -> list[EmbeddingResult]:
        """A unit vector seeded by each text."""
        return [self._embed(text) for text in texts]

    async def count_tokens(
        self, texts: Sequence[str], request: GenerationRequest | None
    ) -> list[int]:
        """Words, as :meth:`complete` and :meth:`embed_many` count them."""
        return [len(text.split()) for text in texts]

    def _embed(self, text: str) -> EmbeddingResult:
        self.calls += 1
        try:
            tokens = self._check(text)
        except RowFailure as exc:
            return exc
        vector = np.random.default_rng(_seed(text)).standard_normal(self.dims)
        vector /= np.linalg.norm(vector)
        return Embedding(vector.tolist(), tokens)

    def health(self) -> EngineHealth:
        """Always ready: nothing here can die (a failed call is that row's error)."""
        return EngineHealth(EngineState.READY)

    async def close(self) -> None:
        """Nothing to release."""


def _content_text(content: Any) -> str:
    """The text of a chat message's content (a string or a list of text parts)."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _content_images(content: Any) -> list[bytes]:
    """The images of a chat message's content: its ``image_url`` parts' data URLs."""
    urls = (url for _, url in image_parts([{"content": content}]))
    return [data_url_bytes(url) for url in urls if str(url).startswith("data:")]


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _value_for(schema: dict[str, Any], seed: int) -> Any:
    kind = schema.get("type")
    if schema.get("anyOf"):  # the first alternative (an optional field's value, not null)
        return _value_for(schema["anyOf"][0], seed)
    if "enum" in schema:
        return schema["enum"][seed % len(schema["enum"])]
    if kind == "object":
        extra = schema.get("additionalProperties")
        if "properties" not in schema and isinstance(extra, dict):  # a MAP
            return {f"k{i}": _value_for(extra, seed + i) for i in range(1 + seed % 3)}
        props = schema.get("properties", {})
        return {k: _value_for(v, seed + i) for i, (k, v) in enumerate(props.items())}
    if kind == "array":
        return [_value_for(schema.get("items", {}), seed + i) for i in range(1 + seed % 3)]
    if kind == "integer":
        return seed % 100
    if kind == "number":
        return (seed % 1000) / 1000
    if kind == "boolean":
        return bool(seed % 2)
    if schema.get("format") == "date":
        return f"2024-01-{1 + seed % 28:02d}"
    if schema.get("format") == "date-time":
        return f"2024-01-{1 + seed % 28:02d}T12:00:00"
    return f"v{seed % 997}"


class _StartingDeterministic(DeterministicBackend):
    """The deterministic backend with a start-up time, so deployments can be watched."""

    def __init__(self, entity: ServedEntity) -> None:
        super().__init__(entity)
        self._startup = float(entity.engine_args.get("startup_seconds", 0) or 0)

    async def start(self) -> None:
        """Take ``engine_args.startup_seconds`` to start, like a model loading."""
        if self._startup > 0:
            await asyncio.sleep(self._startup)


def deterministic_backend_factory(entity: ServedEntity) -> Backend:
    """Local entities on the deterministic backend; external models forwarded for real."""
    if entity.external_model is not None:
        return default_backend_factory(entity)
    return _StartingDeterministic(entity)
