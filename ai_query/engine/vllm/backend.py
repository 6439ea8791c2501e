"""The vLLM backend for generative models: one ``AsyncLLM`` per model, fed every row at once.

The engine is built the first time a row needs it (or when the server warms it), in a worker
thread (:mod:`ai_query.engine.vllm.setup`; ``AsyncLLM`` binds to the engine loop on first use).
Chat prompts are rendered with the model's chat template exactly as ``LLM.chat`` does
(embedding models run in :mod:`ai_query.engine.vllm.pooling`). Each row is its own vLLM
request, so vLLM's continuous batching sees every row of every concurrent batch.

Function calling: ``tools`` are given to the chat template; a forced ``tool_choice``
(``required`` or a named function) is served by structured output for any model (see
:mod:`ai_query.engine.backends.tool_calls`); ``tool_choice="auto"`` returns ``tool_calls`` only
when the
served entity names one of vLLM's tool parsers in ``engine_args["tool_call_parser"]`` (e.g.
``hermes`` for Qwen/Hermes models), else the model's text comes back as content.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from ai_query.engine.backends.backend import (
    ChoiceScores,
    Completion,
    CompletionChunk,
    EmbeddingResult,
    GenerationRequest,
    RowFailure,
)
from ai_query.engine.backends.structured import bounded_schema
from ai_query.engine.backends.tool_calls import tool_call_schema, tool_calls_from_output
from ai_query.engine.core.files import has_images
from ai_query.engine.process.supervision import EngineHealth, EngineState
from ai_query.engine.vllm import compat
from ai_query.engine.vllm.model import ROW_ERROR_LIMIT, VLLMModel
from ai_query.engine.vllm.scoring import LabelTrie, TokenPath
from ai_query.engine.vllm.setup import building
from ai_query.errors import EngineDeadError, EngineError
from ai_query.tasks import Task
from ai_query.text import one_line

log = logging.getLogger(__name__)

#: Why an engine died when its process exited. vLLM's own ``EngineDeadError`` text points at
#: a stack trace in the server's log, which a client never sees.
PROCESS_EXITED = "its EngineCore process exited"


#: The longest a rendered row waits for the rows rendered with it (see
#: :meth:`VLLMBackend._render_together`).
RENDER_WAIT_S = 0.5


#: Engine arguments that vLLM takes as config objects, by the ``vllm.config`` class.
CONFIG_ARGS = {"structured_outputs_config": "StructuredOutputsConfig",
               "kv_transfer_config": "KVTransferConfig"}


class VLLMBackend(VLLMModel):
    """Runs one local generative model with vLLM's async engine."""

    kind = "generate"

    def __init__(self, model_dir: Path, **options: Any) -> None:
        super().__init__(model_dir, **options)  # engine_args, on_start: see VLLMModel
        self._engine: Any = None
        self._ids = itertools.count()
        self._tries: dict[tuple[str, ...], LabelTrie] = {}
        self._rendering = 0
        self._all_rendered: asyncio.Event | None = None

    @property
    def max_model_len(self) -> int:
        """Longest prompt plus output the engine accepts, in tokens."""
        if self._engine is not None:
            return int(self._engine.model_config.max_model_len)
        return int(self.engine_args.get("max_model_len", 2048))

    def health(self) -> EngineHealth:
        """The engine's health; notices an engine process that died while idle."""
        engine = self._engine
        if engine is not None and self.supervisor.state is EngineState.READY and engine.errored:
            self._mark_dead(PROCESS_EXITED)
        return self.supervisor.health()

    async def start(self) -> None:
        """Start the engine (see :meth:`VLLMModel.start`); first notices one that died.

        The engine is built in a worker thread (``AsyncLLM`` binds to the engine loop only when
        first used), so the loop keeps serving while it starts.
        """
        if self.supervisor.state is EngineState.READY and self._engine_errored():
            self._mark_dead(PROCESS_EXITED)
        await super().start()

    def _running(self) -> bool:
        return self._engine is not None

    def _discard(self) -> None:
        if self._engine is not None:
            old, self._engine = self._engine, None
            _quiet_shutdown(old)

    async def _open(self) -> None:
        self._engine = await asyncio.to_thread(self._build)

    def _mark_dead(self, cause: BaseException | str) -> None:
        was_ready = self.supervisor.state is EngineState.READY
        self.supervisor.died(cause)
        if was_ready:
            log.warning("%s died: %s; %s", self.supervisor.name, cause, self.supervisor.outlook())

    def _build(self) -> Any:
        """Build the engine (in a worker thread; blocks until vLLM's engine process is up)."""
        with building(self.model_dir.name):
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM

            log.info("starting vLLM for %s (%s)", self.model_dir, self.engine_args)
            import vllm.config

            kwargs = dict(self.engine_args)
            for name, config in CONFIG_ARGS.items():  # as given in a catalog: a mapping
                if isinstance(kwargs.get(name), dict):
                    kwargs[name] = getattr(vllm.config, config)(**kwargs[name])
            try:
                args = AsyncEngineArgs(model=str(self.model_dir), **kwargs)
                return AsyncLLM.from_engine_args(args)
            except Exception as exc:
                raise EngineDeadError(f"vLLM could not start {self.model_dir}: {exc}") from exc

    def _engine_errored(self) -> bool:
        engine = self._engine
        return engine is not None and bool(engine.errored)

    def _sampling_params(self, request: GenerationRequest, output_kind: str = "FINAL_ONLY") -> Any:
        from vllm.sampling_params import (
            RequestOutputKind,
            SamplingParams,
            StructuredOutputsParams,
        )

        p = request.params
        max_tokens = p.max_tokens or request.default_max_tokens
        structured = None
        forced = tool_call_schema(request.tools, request.tool_choice)
        # Compact JSON: small models otherwise spend their token budget on whitespace.
        if forced is not None:
            structured = StructuredOutputsParams(json=forced, disable_any_whitespace=True)
        elif request.json_schema is not None:
            # Bounded strings and arrays: a string the model never closes ends at its bound,
            # and the answer still fits max_tokens (the user's own bounds are kept).
            structured = StructuredOutputsParams(
                json=bounded_schema(request.json_schema, max_tokens), disable_any_whitespace=True
            )
        elif request.choice is not None:
            structured = StructuredOutputsParams(choice=list(request.choice))
        elif request.json_object:
            structured = StructuredOutputsParams(json_object=True, disable_any_whitespace=True)
        kwargs: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": p.temperature,
            "stop": list(p.stop) or None,
            "seed": p.seed,
            "structured_outputs": structured,
            "output_kind": getattr(RequestOutputKind, output_kind),
        }
        if request.token_logprobs:
            kwargs["logprobs"] = 0  # the sampled token's own log-probability
        for name in (
            "top_p", "top_k", "presence_penalty", "frequency_penalty", "repetition_penalty"
        ):
            if getattr(p, name) is not None:
                kwargs[name] = getattr(p, name)
        return SamplingParams(**kwargs)

    async def _render(self, text: str, chat: bool, request: GenerationRequest | None = None) -> Any:
        if not chat:
            return await compat.render_completion(self._engine, text)
        kwargs: dict[str, Any] = {"add_generation_prompt": True}
        messages: list[Any] = [{"role": "user", "content": text}]
        if request is not None:
            messages = request.conversation(text)
            if not self.takes_images and has_images(messages):
                raise RowFailure(f"{self.model_dir.name} is a text-only model: it takes no images")
            if request.tools and request.tool_choice != "none":
                kwargs["tools"] = request.tools
            if request.params.reasoning_effort is not None:  # as vLLM's server: the template's
                kwargs["reasoning_effort"] = request.params.reasoning_effort
        return await compat.render_chat(self._engine, messages, kwargs)

    @property
    def takes_images(self) -> bool:
        """Whether the model reads images (a vision-language model); call once started."""
        return bool(self._engine.model_config.is_multimodal_model)

    async def _render_together(self, text: str, request: GenerationRequest) -> Any:
        """:meth:`_render`, then wait (at most :data:`RENDER_WAIT_S`) until every render under
        way has finished: rows that arrive together enter the engine together, as
        ``LLM.chat`` adds them, instead of a few at a time while the rest are still being
        rendered (images take the longest), which costs the engine extra, smaller steps."""
        self._rendering += 1
        if self._all_rendered is None or self._all_rendered.is_set():
            self._all_rendered = asyncio.Event()
        done = self._all_rendered
        try:
            prompt = await self._render(text, request.task == Task.CHAT, request)
        finally:
            self._rendering -= 1
            if self._rendering == 0:
                done.set()
        if not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), RENDER_WAIT_S)
        return prompt

    async def complete(self, text: str, request: GenerationRequest) -> Completion:
        """Generate for one chat message or completion prompt."""
        await self.start()
        final = None
        async with self._guard():
            prompt = await self._render_together(text, request)
            params = self._sampling_params(request)
            async for out in self._engine.generate(prompt, params, f"aiq-{next(self._ids)}"):
                final = out
        if final is None or not final.outputs:
            raise RowFailure("the engine returned no output")
        choice = final.outputs[0]
        reasoning, answer, reasoning_tokens = self._split_reasoning(choice.text, choice.token_ids)
        content, tool_calls, finish = self._tool_calls(answer, request, choice.finish_reason)
        return Completion(
            text=content,
            prompt_tokens=len(final.prompt_token_ids or ()),
            completion_tokens=len(choice.token_ids),
            finish_reason=finish,
            tool_calls=tool_calls,
            token_logprobs=_token_logprobs(choice) if request.token_logprobs else None,
            reasoning=reasoning,
            reasoning_tokens=reasoning_tokens,
        )

    def _split_reasoning(self, text: str, token_ids: Sequence[int]) -> tuple[str | None, str, int]:
        """(reasoning, answer, reasoning tokens) where the entity names a ``reasoning_parser``;
        else (None, text, 0)."""
        if self.reasoning_parser is None:
            return None, text, 0
        return compat.split_reasoning(self._parser(), self.model_dir.name, text, token_ids)

    def _parser(self) -> Any:
        """A new vLLM reasoning parser for the entity's ``reasoning_parser`` (streaming
        parsers keep state: one per answer)."""
        assert self.reasoning_parser is not None
        tokenizer = self._engine.renderer.get_tokenizer()
        return compat.reasoning_parser(tokenizer, self.reasoning_parser)

    async def score_choices(self, text: str, request: GenerationRequest) -> ChoiceScores:
        """Each choice's log-probability as the whole answer (:mod:`ai_query.engine.vllm.scoring`).

        The trie's root is read first, so the prompt's KV blocks are cached before the deeper
        nodes (the prompt plus a label's first tokens) are read together. With an answer
        prefix, each choice is scored as the prefix followed by the choice.
        """
        assert request.choice is not None
        await self.start()
        async with self._guard():
            prompt = await self._render(text, request.task == Task.CHAT, request)
            trie = self._trie(request.answers())
            read = {trie.root: await self._read_node(prompt, trie.root, trie.nodes[trie.root])}
            deeper = [node for node in trie.nodes if node != trie.root]
            found = await asyncio.gather(
                *(self._read_node(prompt, node, trie.nodes[node]) for node in deeper)
            )
            read.update(zip(deeper, found, strict=True))
        return ChoiceScores(trie.scores(read), len(prompt["prompt_token_ids"]))

    def _trie(self, choices: tuple[str, ...]) -> LabelTrie:
        trie = self._tries.get(choices)
        if trie is None:
            tokenized = [compat.answer_tokens(self._engine, c) for c in choices]
            trie = LabelTrie.build([tuple(t) for t, _ in tokenized], tokenized[0][1])
            if len(self._tries) > 256:
                self._tries.clear()
            self._tries[choices] = trie
        return trie

    async def _read_node(
        self, prompt: Any, node: TokenPath, tokens: tuple[int, ...]
    ) -> dict[int, float]:
        """The log-probability of each of ``tokens`` right after ``prompt`` + ``node``."""
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprob_token_ids=list(tokens),
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        full = compat.extend_prompt(prompt, node)
        async for out in self._engine.generate(full, params, f"aiq-{next(self._ids)}"):
            final = out
        if final is None or not final.outputs or not final.outputs[0].logprobs:
            raise RowFailure("the engine returned no log-probabilities")
        found = final.outputs[0].logprobs[0]
        return {t: float(found[t].logprob) for t in tokens}

    async def stream(self, text: str, request: GenerationRequest) -> AsyncIterator[CompletionChunk]:
        """Generate, yielding the new text as vLLM produces it (``RequestOutputKind.DELTA``).

        A tool call cannot be shown before it is complete: with tools in play the answer comes
        as one chunk at the end.
        """
        if request.tools and request.tool_choice != "none":
            yield (await self.complete(text, request)).as_chunk()
            return
        await self.start()
        so_far: tuple[str, list[int]] = ("", [])
        parser = self._parser() if self.reasoning_parser is not None else None
        async with self._guard():
            prompt = await self._render(text, request.task == Task.CHAT, request)
            params = self._sampling_params(request, "DELTA")
            async for out in self._engine.generate(prompt, params, f"aiq-{next(self._ids)}"):
                if not out.outputs:
                    continue
                choice = out.outputs[0]
                reasoning, answer = "", choice.text
                if parser is not None:
                    reasoning, answer = compat.stream_reasoning(
                        parser, so_far, (choice.text, choice.token_ids)
                    )
                so_far = (so_far[0] + choice.text, [*so_far[1], *choice.token_ids])
                yield CompletionChunk(
                    answer,
                    len(out.prompt_token_ids or ()),
                    len(so_far[1]),
                    choice.finish_reason if out.finished else None,
                    reasoning=reasoning,
                    reasoning_tokens=(
                        compat.count_reasoning_tokens(parser, so_far[1])
                        if parser is not None and out.finished else 0
                    ),
                )

    def _tool_calls(
        self, text: str, request: GenerationRequest, finish: str | None
    ) -> tuple[str, list[dict[str, Any]] | None, str | None]:
        """(content, tool_calls, finish_reason) for an answer generated under ``request``."""
        if not request.tools or request.tool_choice == "none":
            return text, None, finish
        if tool_call_schema(request.tools, request.tool_choice) is not None:
            try:
                calls = tool_calls_from_output(text, request.tools, request.tool_choice)
            except (ValueError, KeyError, TypeError) as exc:
                raise RowFailure(f"the model's tool call is not complete JSON: {exc}") from exc
            return "", calls, "tool_calls" if request.tool_choice == "required" else finish
        if self.tool_call_parser is None:
            return text, None, finish
        return self._parse_auto_tool_calls(text, request, finish)

    def _parse_auto_tool_calls(
        self, text: str, request: GenerationRequest, finish: str | None
    ) -> tuple[str, list[dict[str, Any]] | None, str | None]:
        api_request = {
            "model": self.model_dir.name,
            "messages": request.conversation(text),
            "tools": request.tools,
            "tool_choice": "auto",
        }
        parsed = compat.parse_tool_calls(
            self._engine, str(self.tool_call_parser), api_request, text
        )
        if parsed is None:
            return text, None, finish
        content, calls = parsed
        return content or "", calls, "tool_calls"

    async def embed_many(self, texts: Sequence[str]) -> list[EmbeddingResult]:
        """Generative models do not embed."""
        raise EngineError(f"{self.model_dir.name} is a generative model; it cannot embed")

    def _guard(self) -> _RowGuard:
        return _RowGuard(self)

    def _shut_down(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
            self.supervisor.stopped()


class _RowGuard:
    """Turns vLLM's exceptions for one request into row failures or a dead engine."""

    def __init__(self, backend: VLLMBackend) -> None:
        self._backend = backend

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, (asyncio.CancelledError, RowFailure, EngineError)):
            return False
        if compat.is_engine_dead(exc) or self._backend._engine_errored():
            backend = self._backend
            backend._mark_dead(PROCESS_EXITED)
            raise EngineDeadError(
                f"{backend.supervisor.name} died: {PROCESS_EXITED}; {backend.supervisor.outlook()}"
            ) from exc
        raise RowFailure(one_line(exc, ROW_ERROR_LIMIT)) from exc


def _quiet_shutdown(engine: Any) -> None:
    try:
        engine.shutdown()
    except Exception as exc:  # noqa: BLE001 - what is left of a dead engine
        log.debug("shutting down a dead engine: %s", exc)


def _token_logprobs(choice: Any) -> tuple[tuple[str, float], ...] | None:
    """Each generated token's text and log-probability, from a vLLM ``CompletionOutput``."""
    if not choice.logprobs:
        return None
    out = []
    for token, found in zip(choice.token_ids, choice.logprobs, strict=False):
        logprob = found[token]
        out.append((logprob.decoded_token or "", float(logprob.logprob)))
    return tuple(out)
