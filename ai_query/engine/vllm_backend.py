"""The vLLM backend: one ``AsyncLLM`` per model, fed every row at once.

The engine is built lazily, on the process's engine loop (``AsyncLLM`` must live on one loop),
the first time a row needs it. Chat prompts are rendered with the model's chat template exactly
as ``LLM.chat`` does; embeddings use vLLM's pooling runner. Each row is its own vLLM request, so
vLLM's continuous batching sees every row of every concurrent batch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ai_query.config import apply_vllm_environment
from ai_query.engine.backend import Completion, Embedding, GenerationRequest, RowFailure
from ai_query.errors import EngineDeadError, EngineError

log = logging.getLogger(__name__)

#: Engine arguments used unless the served entity's ``engine_args`` say otherwise. They are
#: the fast settings for a CPU (eager mode, bf16, scheduler limits that ``LLM`` gets on CPU);
#: on a GPU override ``dtype``/``enforce_eager`` and add ``tensor_parallel_size`` as needed.
DEFAULT_ENGINE_ARGS: dict[str, dict[str, Any]] = {
    "generate": {
        "dtype": "bfloat16",
        "max_model_len": 2048,
        "enforce_eager": True,
        "max_num_seqs": 256,
        "max_num_batched_tokens": 4096,
        "disable_log_stats": True,
    },
    "pooling": {
        "runner": "pooling",
        "dtype": "float32",
        "enforce_eager": True,
        "max_num_seqs": 256,
        "max_num_batched_tokens": 8192,
        "disable_log_stats": True,
    },
}


class VLLMBackend:
    """Runs one local model with vLLM's async engine."""

    def __init__(
        self, model_dir: Path, *, embeddings: bool, engine_args: Mapping[str, Any] | None = None
    ) -> None:
        self.model_dir = model_dir
        self.embeddings = embeddings
        kind = "pooling" if embeddings else "generate"
        self.engine_args = {**DEFAULT_ENGINE_ARGS[kind], **dict(engine_args or {})}
        self._engine: Any = None
        self._start_lock: asyncio.Lock | None = None
        self._ids = itertools.count()
        self._dead: BaseException | None = None

    @property
    def max_model_len(self) -> int:
        """Longest prompt plus output the engine accepts, in tokens."""
        if self._engine is not None:
            return int(self._engine.model_config.max_model_len)
        return int(self.engine_args.get("max_model_len", 2048))

    async def start(self) -> None:
        """Build the engine (once) on the running loop."""
        if self._engine is not None:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._engine is None:
                self._engine = self._build()

    def _build(self) -> Any:
        apply_vllm_environment()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        log.info("starting vLLM for %s (%s)", self.model_dir, self.engine_args)
        try:
            args = AsyncEngineArgs(model=str(self.model_dir), **self.engine_args)
            return AsyncLLM.from_engine_args(args)
        except Exception as exc:
            raise EngineDeadError(f"vLLM could not start {self.model_dir}: {exc}") from exc

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm.sampling_params import (
            RequestOutputKind,
            SamplingParams,
            StructuredOutputsParams,
        )

        p = request.params
        structured = None
        if request.json_schema is not None:
            structured = StructuredOutputsParams(json=request.json_schema)
        elif request.json_object:
            structured = StructuredOutputsParams(json_object=True)
        kwargs: dict[str, Any] = {
            "max_tokens": p.max_tokens or request.default_max_tokens,
            "temperature": p.temperature,
            "stop": list(p.stop) or None,
            "seed": p.seed,
            "structured_outputs": structured,
            "output_kind": RequestOutputKind.FINAL_ONLY,
        }
        for name in ("top_p", "top_k", "presence_penalty", "frequency_penalty"):
            if getattr(p, name) is not None:
                kwargs[name] = getattr(p, name)
        return SamplingParams(**kwargs)

    async def _render(self, text: str, chat: bool) -> Any:
        renderer = self._engine.renderer
        if chat:
            from vllm.renderers import ChatParams

            params = ChatParams(chat_template_kwargs={"add_generation_prompt": True})
            tok = renderer.default_chat_tok_params
            _, prompts = await renderer.render_chat_async(
                [[{"role": "user", "content": text}]], params, tok
            )
        else:
            from vllm.renderers.inputs.preprocess import parse_model_prompt

            parsed = parse_model_prompt(self._engine.model_config, text)
            prompts = await renderer.render_cmpl_async([parsed])
        return prompts[0]

    async def complete(self, text: str, request: GenerationRequest) -> Completion:
        """Generate for one chat message or completion prompt."""
        if self.embeddings:
            raise EngineError(f"{self.model_dir.name} is an embeddings model; it cannot generate")
        await self.start()
        final = None
        async with self._guard():
            prompt = await self._render(text, request.task == "llm/v1/chat")
            params = self._sampling_params(request)
            async for out in self._engine.generate(prompt, params, f"aiq-{next(self._ids)}"):
                final = out
        if final is None or not final.outputs:
            raise RowFailure("the engine returned no output")
        choice = final.outputs[0]
        return Completion(
            text=choice.text,
            prompt_tokens=len(final.prompt_token_ids or ()),
            completion_tokens=len(choice.token_ids),
            finish_reason=choice.finish_reason,
        )

    async def embed(self, text: str) -> Embedding:
        """Embed one text with the pooling runner."""
        if not self.embeddings:
            raise EngineError(f"{self.model_dir.name} is a generative model; it cannot embed")
        await self.start()
        from vllm import PoolingParams

        final = None
        async with self._guard():
            prompt = await self._render(text, chat=False)
            params = PoolingParams(task="embed")
            async for out in self._engine.encode(prompt, params, f"aiq-{next(self._ids)}"):
                final = out
        if final is None:
            raise RowFailure("the engine returned no embedding")
        return Embedding(
            vector=final.outputs.data.tolist(), prompt_tokens=len(final.prompt_token_ids or ())
        )

    def _guard(self) -> _RowGuard:
        if self._dead is not None:
            raise EngineDeadError(f"vLLM engine for {self.model_dir.name} is dead: {self._dead}")
        return _RowGuard(self)

    async def close(self) -> None:
        """Shut the engine down."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()


class _RowGuard:
    """Turns vLLM's exceptions for one request into row failures or a dead engine."""

    def __init__(self, backend: VLLMBackend) -> None:
        self._backend = backend

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, (asyncio.CancelledError, RowFailure, EngineError)):
            return False
        from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDead

        if isinstance(exc, VLLMEngineDead):
            self._backend._dead = exc
            raise EngineDeadError(f"vLLM engine died: {exc}") from exc
        raise RowFailure(_short(str(exc) or type(exc).__name__)) from exc


def _short(message: str, limit: int = 500) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."
