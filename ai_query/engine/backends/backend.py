"""The seam between the Arrow engine and the things that run a model for one row.

A :class:`Backend` answers one request at a time, asynchronously; the engine submits every row
of every batch at once, so a backend with continuous batching (vLLM) keeps its device full.
A backend raises :class:`~ai_query.errors.RowFailure` (an external provider's failure:
:class:`~ai_query.errors.ProviderError`) for a row that fails, and
:class:`~ai_query.errors.EngineDeadError` when it can answer nothing any more. ``RowFailure`` is
re-exported here, as part of the seam's vocabulary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ai_query.engine.backends.structured import describe_schema
from ai_query.engine.core.files import image_part
from ai_query.engine.process.supervision import EngineHealth
from ai_query.errors import RowFailure
from ai_query.options import ModelParameters
from ai_query.tasks import Task

__all__ = [
    "Backend",
    "ChoiceScores",
    "Completion",
    "CompletionChunk",
    "Embedding",
    "EmbeddingResult",
    "GenerationRequest",
    "RowFailure",
]


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """What to generate for one chat or completion request."""

    task: Task
    """:attr:`Task.CHAT` (the text is one user message) or :attr:`Task.COMPLETIONS` (raw
    prompt)."""
    params: ModelParameters
    """Sampling parameters."""
    json_schema: dict[str, Any] | None = None
    """Constrain the output to this JSON schema (structured output), or None."""
    json_object: bool = False
    """Constrain the output to any JSON object."""
    choice: tuple[str, ...] | None = None
    """Constrain the output to exactly one of these strings (guided choice), or None."""
    answer_prefix: str = ""
    """Where choices are scored (:meth:`Backend.score_choices`): words the answer starts with
    before the choice (e.g. "The sentiment is"); generation ignores it."""
    default_max_tokens: int = 256
    """max_tokens when the call gives none."""
    messages: list[dict[str, Any]] | None = None
    """A whole chat conversation (OpenAI ``messages``); when set, used instead of the text."""
    tools: list[dict[str, Any]] | None = None
    """OpenAI function tools offered to the model (chat only)."""
    tool_choice: str | dict[str, Any] | None = None
    """``none``, ``auto``, ``required`` or a named function
    (:mod:`ai_query.engine.backends.tool_calls`)."""

    files: tuple[bytes, ...] = ()
    """Images sent with the text (``ai_query(..., files => content)``), checked
    (:func:`~ai_query.engine.core.files.check_image`); the user message then holds the text and
    each image as an OpenAI ``image_url`` part (a data URL)."""

    token_logprobs: bool = False
    """Return each generated token's log-probability (:attr:`Completion.token_logprobs`)."""
    schema_hint: bool = False
    """With a JSON schema and no ``messages``: add a system turn stating the schema in words
    (:func:`~ai_query.engine.backends.structured.describe_schema`; SQL calls: the grammar forces
    valid JSON, the instruction tells the model what to fill in)."""

    def answers(self) -> tuple[str, ...]:
        """The whole answers whose probabilities score :attr:`choice`, in its order."""
        assert self.choice is not None
        if not self.answer_prefix:
            return self.choice
        return tuple(f"{self.answer_prefix} {c}" for c in self.choice)

    def conversation(self, text: str) -> list[dict[str, Any]]:
        """The chat messages to send: :attr:`messages`, else ``text`` as one user message."""
        if self.messages is not None:
            return self.messages
        content: str | list[dict[str, Any]] = text
        if self.files:
            content = [{"type": "text", "text": text}, *(image_part(f) for f in self.files)]
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if self.schema_hint and self.json_schema is not None:
            instruction = describe_schema(self.json_schema)
            messages.insert(0, {"role": "system", "content": instruction})
        return messages


@dataclass(frozen=True)
class Completion:
    """A generated answer."""

    text: str
    """The generated text."""
    prompt_tokens: int
    """Tokens in the prompt, after templating."""
    completion_tokens: int
    """Tokens generated."""
    finish_reason: str | None = None
    """Why generation stopped (``stop``, ``length``, ``tool_calls``)."""
    tool_calls: list[dict[str, Any]] | None = None
    """OpenAI ``tool_calls`` when the model called tools, else None."""
    token_logprobs: tuple[tuple[str, float], ...] | None = None
    """Each generated token's text and log-probability, where the request asked for them
    (:attr:`GenerationRequest.token_logprobs`) and the backend gives them; else None."""
    reasoning: str | None = None
    """A reasoning model's reasoning, kept apart from :attr:`text` (the answer), where the
    provider returns it; else None."""
    reasoning_tokens: int = 0
    """Of :attr:`completion_tokens`, those spent reasoning (the provider's
    ``completion_tokens_details.reasoning_tokens``); 0 where none or not reported."""

    def as_chunk(self) -> CompletionChunk:
        """The whole answer as one streamed chunk (used when tool calls must come whole)."""
        return CompletionChunk(
            self.text,
            self.prompt_tokens,
            self.completion_tokens,
            self.finish_reason,
            self.tool_calls,
        )


@dataclass(frozen=True)
class CompletionChunk:
    """A piece of a streamed answer."""

    text: str
    """Text generated since the previous chunk."""
    prompt_tokens: int = 0
    """Tokens in the prompt."""
    completion_tokens: int = 0
    """Tokens generated so far (cumulative)."""
    finish_reason: str | None = None
    """Set on the last chunk."""
    tool_calls: list[dict[str, Any]] | None = None
    """Tool calls, on the last chunk, when the model called tools."""
    reasoning: str = ""
    """A reasoning model's reasoning generated since the previous chunk (kept apart from
    :attr:`text`, the answer)."""
    reasoning_tokens: int = 0
    """Of :attr:`completion_tokens`, those spent reasoning so far, where known."""


@dataclass(frozen=True)
class ChoiceScores:
    """The model's log-probability of each allowed answer (:attr:`GenerationRequest.choice`)."""

    logprobs: list[float]
    """Log-probability of each whole answer given the prompt, in the order of the choices."""
    prompt_tokens: int
    """Tokens in the prompt, after templating."""

    @property
    def best(self) -> int:
        """The index of the most probable answer."""
        return max(range(len(self.logprobs)), key=self.logprobs.__getitem__)


@dataclass(frozen=True)
class Embedding:
    """An embedding vector."""

    vector: Sequence[float] | np.ndarray
    """The vector (a float32 array from local models; L2-normalised by the model's pooler
    where it normalises)."""
    prompt_tokens: int
    """Tokens in the input."""


#: What embedding one text gives: its vector, or why it failed.
EmbeddingResult = Embedding | RowFailure


class Backend(Protocol):
    """Runs one model. Every method is called on the engine's event loop."""

    async def complete(self, text: str, request: GenerationRequest) -> Completion:
        """Generate for one chat message or completion prompt."""
        ...

    def stream(self, text: str, request: GenerationRequest) -> AsyncIterator[CompletionChunk]:
        """Generate like :meth:`complete`, yielding text as it is produced (an async generator)."""
        ...

    async def score_choices(self, text: str, request: GenerationRequest) -> ChoiceScores | None:
        """Score each of ``request.choice`` as the answer to ``text`` (no generation); None
        when this model gives no probabilities (the caller then generates under the choice)."""
        ...

    async def embed_many(self, texts: Sequence[str]) -> list[EmbeddingResult]:
        """Embed ``texts`` (as few model calls as the backend can): one result per text, in
        order, a :class:`RowFailure` in place of a text that cannot be embedded."""
        ...

    async def count_tokens(
        self, texts: Sequence[str], request: GenerationRequest | None
    ) -> list[int] | None:
        """The prompt tokens each of ``texts`` would take under ``request`` (None: an
        embeddings call), counted as :meth:`complete`/:meth:`embed_many` would report them, with
        no model call; None when this backend has no tokenizer (an external provider)."""
        ...

    def health(self) -> EngineHealth:
        """Whether the model answers now (see :mod:`ai_query.engine.process.supervision`)."""
        ...

    async def close(self) -> None:
        """Release the model; in-flight calls may fail afterwards."""
        ...
