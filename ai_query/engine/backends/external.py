"""The external backend: an OpenAI-compatible provider reached with the official ``openai``
client.

Concurrency is bounded per model; 429 and 5xx answers (and dropped connections) are retried
with exponential backoff, waiting at least what the server's ``Retry-After`` asks. The API key
comes from a ``{{secrets/scope/key}}`` reference resolved at first use and is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ai_query.catalog import ExternalModel
from ai_query.engine.backends.backend import (
    Completion,
    CompletionChunk,
    Embedding,
    EmbeddingResult,
    GenerationRequest,
    RowFailure,
)
from ai_query.engine.process.supervision import EngineHealth, EngineState
from ai_query.errors import ProviderError
from ai_query.secrets import resolve_secret
from ai_query.tasks import Task

log = logging.getLogger(__name__)

#: First backoff and the longest single wait, in seconds.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


class ExternalBackend:
    """Calls an OpenAI-compatible API for one external model."""

    def __init__(self, model: ExternalModel) -> None:
        self.model = model
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None
        self.retries = 0
        """How many retries this backend has made (for tests and metrics)."""

    def _ensure(self) -> Any:
        if self._client is None:
            import openai

            cfg = self.model.openai_config
            key = cfg.openai_api_key_plaintext
            if cfg.openai_api_key is not None:
                key = resolve_secret(cfg.openai_api_key)
            self._client = openai.AsyncOpenAI(
                base_url=cfg.openai_api_base,
                api_key=key or "none",
                organization=cfg.openai_organization,
                max_retries=0,  # retried here, so Retry-After and the bound are ours
            )
            self._semaphore = asyncio.Semaphore(self.model.max_concurrency)
        return self._client

    async def complete(self, text: str, request: GenerationRequest) -> Completion:
        """One chat or completion call (tools and tool_choice are passed through); with the
        generated tokens' log-probabilities where the call asks for them and the provider
        gives them (:attr:`GenerationRequest.token_logprobs`)."""
        client = self._ensure()
        kwargs = self._arguments(request)
        chat = request.task == Task.CHAT
        if chat:
            method, kwargs["messages"] = client.chat.completions.create, request.conversation(text)
        else:
            method, kwargs["prompt"] = client.completions.create, text
        answer = await self._call_with_logprobs(method, kwargs, request.token_logprobs, chat)
        choice = answer.choices[0]
        tool_calls, reasoning = [], None
        if chat:
            content, reasoning = answer_and_reasoning(choice.message)
            calls = choice.message.tool_calls
            tool_calls = [c.model_dump(mode="json", exclude_none=True) for c in calls or ()]
        else:
            content = choice.text or ""
        usage = answer.usage
        return Completion(
            content,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            choice.finish_reason,
            tool_calls or None,
            token_logprobs=_token_logprobs(choice, chat) if request.token_logprobs else None,
            reasoning=reasoning,
            reasoning_tokens=_reasoning_tokens(usage),
        )

    async def _call_with_logprobs(
        self, method: Any, kwargs: dict[str, Any], logprobs: bool, chat: bool
    ) -> Any:
        """``method(**kwargs)``, asking for the sampled tokens' log-probabilities when
        ``logprobs``; a provider that refuses the parameter (HTTP 400) is asked again without
        it, so its answer comes with no probabilities (a NULL confidence) rather than an error."""
        import openai

        if not logprobs:
            return await self._call(method, **kwargs)
        try:
            return await self._call(method, **kwargs, logprobs=True if chat else 0)
        except ProviderError as exc:
            if not isinstance(exc.__cause__, openai.BadRequestError):
                raise
            log.info("external %s refuses logprobs; asking without", self.model.name)
            return await self._call(method, **kwargs)

    async def score_choices(self, text: str, request: GenerationRequest) -> None:
        """None: a provider's API gives log-probabilities of the tokens it generated, not of
        answers it was asked to weigh; the engine generates under the choice instead."""
        return None

    async def stream(self, text: str, request: GenerationRequest) -> AsyncIterator[CompletionChunk]:
        """A streamed chat or completion call; tool calls come whole, on the last chunk."""
        import httpx
        import openai

        if request.tools and request.tool_choice != "none":
            yield (await self.complete(text, request)).as_chunk()
            return
        client = self._ensure()
        kwargs = self._arguments(request)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        if request.task == Task.CHAT:
            method = client.chat.completions.create
            kwargs["messages"] = request.conversation(text)
        else:
            method = client.completions.create
            kwargs["prompt"] = text
        events = await self._call(method, **kwargs)
        prompt_tokens = generated = reasoning_tokens = 0
        finish: str | None = None
        try:
            async for event in events:
                if event.usage is not None:
                    prompt_tokens = event.usage.prompt_tokens
                    generated = event.usage.completion_tokens
                    reasoning_tokens = _reasoning_tokens(event.usage)
                if not event.choices:
                    continue
                choice = event.choices[0]
                thought = None
                if request.task == Task.CHAT:
                    piece, thought = answer_and_reasoning(choice.delta)
                else:
                    piece = choice.text or ""
                finish = choice.finish_reason or finish
                if piece or thought:
                    generated += 1
                    yield CompletionChunk(piece, prompt_tokens, generated, reasoning=thought or "")
        except (openai.APIError, httpx.HTTPError) as exc:  # a broken stream: the provider's
            raise ProviderError(f"external model {self.model.name!r}: {_describe(exc)}") from exc
        yield CompletionChunk(
            "", prompt_tokens, generated, finish or "stop", reasoning_tokens=reasoning_tokens
        )

    def _arguments(self, request: GenerationRequest) -> dict[str, Any]:
        """The OpenAI API arguments of ``request`` (everything but the prompt/messages)."""
        p = request.params
        kwargs: dict[str, Any] = {
            "model": self.model.name,
            "max_tokens": p.max_tokens or request.default_max_tokens,
            "temperature": p.temperature,
        }
        for name in ("top_p", "seed", "presence_penalty", "frequency_penalty", "reasoning_effort"):
            if getattr(p, name) is not None:
                kwargs[name] = getattr(p, name)
        if p.stop:
            kwargs["stop"] = list(p.stop)
        # Not in OpenAI's API: sent as extra fields, which vLLM-compatible servers honour.
        # repetition_penalty is left out for OpenAI itself, which refuses unknown fields (the
        # Playground sends one by default).
        extra: dict[str, Any] = {} if p.top_k is None else {"top_k": p.top_k}
        if p.repetition_penalty is not None and self.model.provider != "openai":
            extra["repetition_penalty"] = p.repetition_penalty
        if extra:
            kwargs["extra_body"] = extra
        if request.task == Task.CHAT:
            if request.json_schema is not None:
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "result",
                        "schema": request.json_schema,
                        "strict": True,
                    },
                }
            elif request.json_object:
                kwargs["response_format"] = {"type": "json_object"}
            if request.tools:
                kwargs["tools"] = request.tools
                if request.tool_choice is not None:
                    kwargs["tool_choice"] = request.tool_choice
        elif request.json_schema is not None:
            kwargs.setdefault("extra_body", {})["structured_outputs"] = {
                "json": request.json_schema
            }
        if request.choice is not None:
            # vLLM's OpenAI-compatible server reads guided choice from the request body.
            kwargs.setdefault("extra_body", {})["structured_outputs"] = {
                "choice": list(request.choice)
            }
        return kwargs

    async def embed_many(self, texts: Sequence[str]) -> list[EmbeddingResult]:
        """One embeddings call per text, concurrently (bounded by the model's concurrency), so
        that a provider's error for one text stays that text's."""
        return list(await asyncio.gather(*(self._embed(text) for text in texts)))

    async def _embed(self, text: str) -> EmbeddingResult:
        try:
            return await self._embed_call(text)
        except RowFailure as exc:
            return exc

    async def _embed_call(self, text: str) -> Embedding:
        client = self._ensure()
        answer = await self._call(client.embeddings.create, model=self.model.name, input=[text])
        usage = answer.usage
        return Embedding(list(answer.data[0].embedding), usage.prompt_tokens if usage else 0)

    async def _call(self, method: Any, **kwargs: Any) -> Any:
        import openai

        assert self._semaphore is not None
        attempt = 0
        while True:
            try:
                async with self._semaphore:
                    return await method(**kwargs)
            except (
                openai.RateLimitError,
                openai.InternalServerError,
                openai.APIConnectionError,
            ) as exc:
                status = getattr(exc, "status_code", None)
                if attempt >= self.model.max_retries:
                    raise ProviderError(
                        f"external model {self.model.name!r} failed after {attempt} retries: "
                        f"{_describe(exc)}"
                    ) from exc
                wait = _backoff(attempt, getattr(exc, "response", None))
                log.info("external %s: HTTP %s, retry in %.2fs", self.model.name, status, wait)
                attempt += 1
                self.retries += 1
                await asyncio.sleep(wait)
            except openai.APIError as exc:  # a refusal, or an answer that is not the API's
                raise ProviderError(
                    f"external model {self.model.name!r}: {_describe(exc)}"
                ) from exc

    async def count_tokens(
        self, texts: Sequence[str], request: GenerationRequest | None
    ) -> None:
        """None: a provider's tokenizer is not at hand (the caller estimates)."""
        return None

    def health(self) -> EngineHealth:
        """Always ready: nothing here can die (a failed call is that row's error)."""
        return EngineHealth(EngineState.READY)

    async def close(self) -> None:
        """Close the HTTP client."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()


def _reasoning_tokens(usage: Any) -> int:
    """The reasoning tokens a provider's usage reports (OpenAI's
    ``completion_tokens_details.reasoning_tokens``), else 0."""
    details = getattr(usage, "completion_tokens_details", None)
    return int(getattr(details, "reasoning_tokens", None) or 0)


def answer_and_reasoning(message: Any) -> tuple[str, str | None]:
    """A chat answer's text and, apart, a reasoning model's reasoning: Databricks' shape
    (``content`` a list of a ``reasoning`` part with its ``summary`` texts, then ``text``
    parts) or the OpenAI-compatible one (``reasoning_content``, vLLM's and DeepSeek's)."""
    content = message.content
    reasoning = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
    if isinstance(content, list):
        thoughts = [
            str(summary.get("text") or "")
            for part in map(_as_dict, content) if part.get("type") == "reasoning"
            for summary in map(_as_dict, part.get("summary") or ())
        ]
        reasoning = "\n".join(t for t in thoughts if t) or reasoning
    return _parts_text(content), reasoning if isinstance(reasoning, str) and reasoning else None


def _parts_text(content: Any) -> str:
    """The answer text of a message's ``content``: a string, or the text of its ``text``
    parts (a list, as reasoning models answer)."""
    if not isinstance(content, list):
        return content or ""
    return "".join(
        str(part.get("text") or "") for part in map(_as_dict, content) if part.get("type") == "text"
    )


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else {}


def _token_logprobs(choice: Any, chat: bool) -> tuple[tuple[str, float], ...] | None:
    """Each generated token's text and log-probability from a provider's choice, or None."""
    found = getattr(choice, "logprobs", None)
    if found is None:
        return None
    if chat:
        tokens = [(t.token, t.logprob) for t in found.content or ()]
    else:
        tokens = list(zip(found.tokens or (), found.token_logprobs or (), strict=False))
    if not tokens or any(logprob is None for _, logprob in tokens):
        return None
    return tuple((str(token), float(logprob)) for token, logprob in tokens)


def _backoff(attempt: int, response: Any) -> float:
    wait = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt) * (0.5 + random.random() / 2)  # noqa: S311
    header = response.headers.get("retry-after") if response is not None else None
    if header:
        try:
            wait = max(wait, min(BACKOFF_CAP, float(header)))
        except ValueError:
            pass  # an HTTP date: the exponential wait stands
    return wait


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    text = message or str(exc)
    return f"HTTP {status}: {text}" if status else text
