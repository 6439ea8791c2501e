"""Request bodies of the OpenAI-compatible and Databricks query APIs, and what they mean.

The same bodies are accepted by ``/v1/...`` and ``/serving-endpoints/{name}/invocations``:
chat (``messages``), completions (``prompt``), embeddings (``input``). Fields clients send
that change nothing here (``user``, ``logit_bias`` left empty, ...) are accepted and ignored;
fields whose effect is not supported (``logprobs``, ``echo``, ``best_of``) are refused with a
400 rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ai_query.catalog import describe_validation_error
from ai_query.engine.backends.backend import GenerationRequest
from ai_query.engine.backends.tool_calls import tool_call_schema
from ai_query.engine.core.files import check_image_parts
from ai_query.errors import ConfigError, RowFailure
from ai_query.options import ModelParameters
from ai_query.serving.http.problems import APIError, bad_request
from ai_query.tasks import Task


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    """Endpoint name (``/v1`` routes); ignored by ``invocations``, whose path names it."""
    client_request_id: str | None = None
    """Databricks: an id of the caller's, recorded in the inference table."""
    user: str | None = None
    """OpenAI: an end-user id (recorded, not used for limits: those use the principal)."""


class _Sampling(_Body):
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    """vLLM's extra sampling parameter (1.0: off); unset, the model samples without it."""
    reasoning_effort: str | None = None
    """OpenAI's, for reasoning models (:data:`ai_query.options.REASONING_EFFORTS`)."""
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logprobs: bool | int | None = None

    def parameters(self) -> ModelParameters:
        """The sampling parameters (OpenAI's default temperature is 1.0).

        Raises:
            APIError: 400 naming a bad value.
        """
        values = {
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "stop": self.stop,
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty,
            "reasoning_effort": self.reasoning_effort,
        }
        if self.logprobs:
            raise bad_request("logprobs are not supported by this server")
        try:
            return ModelParameters.from_value({k: v for k, v in values.items() if v is not None})
        except ConfigError as exc:
            raise bad_request(str(exc).replace("modelParameters.", "")) from exc

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions`` (and chat ``invocations``)."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    def generation(
        self, default_max_tokens: int, image_url_allowed: Callable[[str], bool] = lambda _: False
    ) -> GenerationRequest:
        """What to generate; ``image_url_allowed``: which image URLs (not data URLs) messages
        may name.

        Raises:
            APIError: 400 on a bad message (or image), response_format, tool or tool_choice.
        """
        for i, message in enumerate(self.messages):
            if not isinstance(message.get("role"), str):
                raise bad_request(f"messages[{i}] has no role")
        try:
            check_image_parts(self.messages, image_url_allowed)
        except RowFailure as exc:
            raise bad_request(str(exc)) from None
        schema, json_object = _response_format(self.response_format)
        tool_choice = self.tool_choice
        if self.tools and tool_choice is None:
            tool_choice = "auto"
        try:
            tool_call_schema(self.tools, tool_choice)
        except ConfigError as exc:
            raise bad_request(str(exc)) from exc
        return GenerationRequest(
            task=Task.CHAT,
            params=self.parameters(),
            json_schema=schema,
            json_object=json_object,
            default_max_tokens=default_max_tokens,
            messages=self.messages,
            tools=self.tools or None,
            tool_choice=tool_choice if self.tools else None,
        )


class CompletionRequest(_Sampling):
    """``POST /v1/completions`` (and completions ``invocations``)."""

    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def prompts(self) -> list[str]:
        """The prompts, one per choice group."""
        if self.echo or (self.best_of or 1) > 1 or self.suffix:
            raise bad_request("echo, best_of and suffix are not supported by this server")
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts:
            raise bad_request("prompt must not be empty")
        return prompts

    def generation(self, default_max_tokens: int) -> GenerationRequest:
        """What to generate for each prompt."""
        return GenerationRequest(
            task=Task.COMPLETIONS,
            params=self.parameters(),
            default_max_tokens=default_max_tokens,
        )


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings`` (and embeddings ``invocations``)."""

    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    def texts(self) -> list[str]:
        """The texts to embed."""
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts:
            raise bad_request("input must not be empty")
        return texts


async def read_json(request: Request) -> Any:
    """The request's JSON body.

    Raises:
        APIError: 400 when it is not JSON.
    """
    try:
        return await request.json()
    except ValueError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc


def parse(model: type[_Body], body: Any) -> Any:
    """Validate ``body`` as ``model``.

    Raises:
        APIError: 400 naming each bad field.
    """
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise APIError(400, describe_validation_error(exc)) from exc


def _response_format(value: dict[str, Any] | None) -> tuple[dict[str, Any] | None, bool]:
    """(json_schema, json_object) of an OpenAI ``response_format``."""
    if not value:
        return None, False
    kind = value.get("type")
    if kind == "text":
        return None, False
    if kind == "json_object":
        return None, True
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request("response_format.json_schema.schema must be a JSON schema object")
        return schema, False
    raise bad_request(
        f"response_format.type must be text, json_object or json_schema, got {kind!r}"
    )
