"""Serving one query: endpoint, rate limit, traffic split, backend call, answer and records.

Both APIs (``/v1/...`` and ``/serving-endpoints/{name}/invocations``) come here. Each request
is checked against the endpoint's rate limits, sent to one served entity drawn by the traffic
split, run on the shared backend on the engine loop, answered in the OpenAI shape (as
Databricks' foundation-model APIs do), and recorded: metrics, a structured access log line and
an inference-table row, also for refused and failed requests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from ai_query.catalog import Endpoint, ServedEntity
from ai_query.engine.backends.backend import Embedding, RowFailure
from ai_query.engine.core.budget import Allowance
from ai_query.redaction import redact
from ai_query.serving.http import responses
from ai_query.serving.http.context import ServerContext
from ai_query.serving.http.problems import bad_request, from_exception, rate_limited
from ai_query.serving.http.schemas import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse,
)
from ai_query.serving.http.streaming import stream_chunks
from ai_query.serving.inference_table import InferenceRecord
from ai_query.serving.logs import access_log
from ai_query.serving.permissions import Identity, PermissionLevel
from ai_query.tasks import Task

#: Route kinds and the endpoint task each needs.
ROUTE_TASKS = {
    "chat": Task.CHAT,
    "completions": Task.COMPLETIONS,
    "embeddings": Task.EMBEDDINGS,
}
#: The body field that holds the request, by task.
_BODY_KEYS = {
    Task.CHAT: "messages",
    Task.COMPLETIONS: "prompt",
    Task.EMBEDDINGS: "input",
}


@dataclass
class Call:
    """One query being served."""

    ctx: ServerContext
    name: str
    route: str
    principal: str
    body: Any
    client_request_id: str | None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)
    arrived: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    endpoint: Endpoint | None = None
    entity: ServedEntity | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    allowance: Allowance | None = None

    @property
    def external(self) -> bool:
        """The served entity is an external model."""
        return self.entity is not None and self.entity.external_model is not None

    def headers(self) -> dict[str, str]:
        """Headers of every answer: the request id and the served entity."""
        headers = {"x-request-id": self.request_id}
        if self.entity is not None:
            headers["x-served-entity"] = self.entity.served_name
        return headers

    def finish(self, status: int, response: Any) -> None:
        """Record the answered call: metrics, token limits, access log, inference table."""
        ctx = self.ctx
        seconds = time.perf_counter() - self.started
        # Unknown names share one label: metrics must not grow with whatever callers send.
        label = self.endpoint.name if self.endpoint is not None else "(unknown)"
        ctx.metrics.observe(label, self.route, status, seconds)
        ctx.metrics.count_tokens(label, self.prompt_tokens, self.completion_tokens)
        if self.endpoint is not None:
            ctx.limiter.record_tokens(
                self.endpoint, self.principal, self.prompt_tokens + self.completion_tokens
            )
            ctx.budgets.count(
                self.allowance, self.endpoint, self.prompt_tokens, self.completion_tokens
            )
        entity = self.entity.served_name if self.entity is not None else None
        access_log.info(
            "%s %s -> %d in %.1f ms (principal %s, entity %s, tokens %d/%d)",
            self.route,
            label,
            status,
            seconds * 1000,
            self.principal,
            entity,
            self.prompt_tokens,
            self.completion_tokens,
            extra={
                "request_id": self.request_id,
                "endpoint": label,
                "served_entity": entity,
                "route": self.route,
                "principal": self.principal,
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            },
        )
        if ctx.table is None or self.endpoint is None:
            return
        capture = self.endpoint.config.auto_capture_config or {}
        if capture.get("enabled") is False:  # Databricks' per-endpoint opt-out
            return
        ctx.table.append(
            InferenceRecord(
                endpoint_name=self.endpoint.name,
                databricks_request_id=self.request_id,
                client_request_id=self.client_request_id,
                request_time=self.arrived,
                status_code=status,
                execution_duration_ms=int(seconds * 1000),
                request=json.dumps(self.body, default=str),
                response=json.dumps(response, default=str),
                served_entity_id=entity,
                requester=self.principal,
                input_token_count=self.prompt_tokens,
                output_token_count=self.completion_tokens,
                cost=price.cost(self.prompt_tokens, self.completion_tokens)
                if (price := self.endpoint.price) is not None else None,
                reasoning_token_count=self.reasoning_tokens,
            )
        )


async def invoke(
    ctx: ServerContext,
    name: str,
    body: Any,
    *,
    caller: Identity,
    route: str,
    client_request_id: str | None = None,
) -> Response:
    """Serve one query to endpoint ``name``.

    Args:
        ctx: the server's parts.
        name: endpoint (or alias) name.
        body: the parsed JSON body.
        caller: the authenticated caller (it needs ``CAN_QUERY`` on the endpoint).
        route: ``chat``, ``completions``, ``embeddings`` or ``invocations`` (any task).
        client_request_id: the caller's id for the request, if given in a header.
    """
    if client_request_id is None and isinstance(body, dict):
        client_request_id = body.get("client_request_id")
    principal = caller.name
    call = Call(ctx, name, route, principal, body, client_request_id)
    try:
        ctx.serving.authorize(caller, name, PermissionLevel.CAN_QUERY)
        call.endpoint = ctx.serving.endpoint(name)
        task = call.endpoint.task
        wanted = ROUTE_TASKS.get(route)
        if wanted is not None and wanted != task:
            # A chat model also completes raw prompts (as vLLM's own server allows).
            if not (route == "completions" and task == Task.CHAT):
                raise bad_request(f"endpoint {name!r} serves {task}, not {wanted}")
            task = wanted
        if route == "invocations" and isinstance(body, dict) and _BODY_KEYS[task] not in body:
            key = _BODY_KEYS[task]
            raise bad_request(f"endpoint {name!r} serves {task}: the body needs {key!r}")
        wait = ctx.limiter.acquire(call.endpoint, principal)
        if wait > 0:
            ctx.metrics.rate_limited.labels(call.endpoint.name).inc()
            raise rate_limited(wait, f"rate limit of endpoint {call.endpoint.name!r} exceeded")
        call.allowance = ctx.budgets.check(call.endpoint, principal)
        call.entity = call.endpoint.choose_entity(ctx.rng)
        gauge = ctx.metrics.in_flight.labels(call.endpoint.name)
        gauge.inc()
        answer: Response | None = None
        try:
            if task == Task.EMBEDDINGS:
                answer = await _embeddings(call)
            elif task == Task.CHAT:
                chat = parse(ChatRequest, body)
                answer = await (_chat_stream(call, chat) if chat.stream else _chat(call, chat))
            else:
                cmpl = parse(CompletionRequest, body)
                answer = await (
                    _cmpl_stream(call, cmpl) if cmpl.stream else _completions(call, cmpl)
                )
        finally:
            if not isinstance(answer, StreamingResponse):  # a stream lowers it when it ends
                gauge.dec()
    except Exception as exc:
        error = from_exception(exc, external=call.external, request_id=call.request_id)
        error.headers = {**call.headers(), **error.headers}
        error.message = redact(error.message)
        call.finish(error.status, {"error_code": error.code, "message": error.message})
        error.logged = True
        if error is exc:
            raise
        raise error from exc
    return answer


async def _chat(call: Call, chat: ChatRequest) -> Response:
    gen = chat.generation(
        call.ctx.options.default_max_tokens, call.ctx.options.image_url_allowed
    )
    backend = call.ctx.serving.backend(call.entity)  # type: ignore[arg-type]
    done = await call.ctx.serving.run(_gather([backend.complete("", gen) for _ in range(chat.n)]))
    call.prompt_tokens = done[0].prompt_tokens
    call.completion_tokens = sum(d.completion_tokens for d in done)
    call.reasoning_tokens = sum(d.reasoning_tokens for d in done)
    databricks = call.route == "invocations"
    body = responses.chat(call.request_id, _model(call), done, databricks=databricks)
    call.finish(200, body)
    return JSONResponse(body, headers=call.headers())


async def _completions(call: Call, cmpl: CompletionRequest) -> Response:
    prompts = cmpl.prompts()
    gen = cmpl.generation(call.ctx.options.default_max_tokens)
    backend = call.ctx.serving.backend(call.entity)  # type: ignore[arg-type]
    jobs = [backend.complete(p, gen) for p in prompts for _ in range(cmpl.n)]
    done = await call.ctx.serving.run(_gather(jobs))
    call.prompt_tokens = sum(d.prompt_tokens for d in done[:: cmpl.n])
    call.completion_tokens = sum(d.completion_tokens for d in done)
    body = responses.completion(call.request_id, _model(call), done, cmpl.n)
    call.finish(200, body)
    return JSONResponse(body, headers=call.headers())


async def _embeddings(call: Call) -> Response:
    req = parse(EmbeddingRequest, call.body)
    texts = req.texts()
    backend = call.ctx.serving.backend(call.entity)  # type: ignore[arg-type]
    results = await call.ctx.serving.run(backend.embed_many(texts))
    failed = next((r for r in results if isinstance(r, RowFailure)), None)
    if failed is not None:
        raise failed
    done = [r for r in results if isinstance(r, Embedding)]
    if req.dimensions is not None and req.dimensions != len(done[0].vector):
        raise bad_request(f"this model has {len(done[0].vector)} dimensions, not {req.dimensions}")
    call.prompt_tokens = sum(e.prompt_tokens for e in done)
    body = responses.embeddings(_model(call), done, req.encoding_format)
    logged = responses.embeddings(_model(call), done, "float")
    call.finish(200, logged)
    return JSONResponse(body, headers=call.headers())


async def _chat_stream(call: Call, chat: ChatRequest) -> Response:
    if chat.n != 1:
        raise bad_request("n > 1 is not supported with stream")
    gen = chat.generation(
        call.ctx.options.default_max_tokens, call.ctx.options.image_url_allowed
    )
    return await _stream(call, gen, "", chat.include_usage, chat=True)


async def _cmpl_stream(call: Call, cmpl: CompletionRequest) -> Response:
    prompts = cmpl.prompts()
    if cmpl.n != 1 or len(prompts) != 1:
        raise bad_request("stream needs exactly one prompt and n = 1")
    gen = cmpl.generation(call.ctx.options.default_max_tokens)
    return await _stream(call, gen, prompts[0], cmpl.include_usage, chat=False)


async def _stream(call: Call, gen: Any, text: str, usage: bool, *, chat: bool) -> Response:
    backend = call.ctx.serving.backend(call.entity)  # type: ignore[arg-type]
    chunks = stream_chunks(backend, text, gen)
    first = await anext(chunks)  # fail with a proper status before the stream starts
    assembler = responses.StreamAssembler(call.request_id, _model(call), chat=chat, usage=usage)
    gauge = call.ctx.metrics.in_flight.labels(call.endpoint.name)  # type: ignore[union-attr]

    async def events() -> AsyncIterator[bytes]:
        status = 200
        try:
            for event in assembler.feed(first):
                yield event
            async for chunk in chunks:
                for event in assembler.feed(chunk):
                    yield event
            for event in assembler.close():
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            status = 499  # the client went away; closing the chunks aborts the generation
            raise
        except Exception as exc:  # noqa: BLE001 - the status is sent; report in-stream
            error = from_exception(exc, external=call.external, request_id=call.request_id)
            status = error.status
            message = redact(error.message)
            yield responses.sse({"error": {"message": message, "code": error.code}})
        finally:
            await chunks.aclose()
            gauge.dec()
            call.prompt_tokens = assembler.prompt_tokens
            call.completion_tokens = assembler.completion_tokens
            call.reasoning_tokens = assembler.reasoning_tokens
            call.finish(status, assembler.final())

    return StreamingResponse(events(), media_type="text/event-stream", headers=call.headers())


async def _gather(coros: list[Any]) -> list[Any]:
    """Await ``coros`` together (on the engine loop)."""
    return list(await asyncio.gather(*coros))


def _model(call: Call) -> str:
    return call.entity.served_name if call.entity is not None else call.name

