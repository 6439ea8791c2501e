"""What vLLM's two backends share: engine defaults for this machine, and a supervised start.

:mod:`.backend` runs generative models on vLLM's ``AsyncLLM``; :mod:`.pooling` runs
embedding models on its offline ``LLM``. Both are a :class:`VLLMModel`: built off the engine
loop (see :mod:`.setup`), once, and again after the engine died, as their
:class:`~ai_query.engine.process.supervision.Supervisor` allows.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ai_query.engine.process.supervision import EngineHealth, EngineState, Supervisor
from ai_query.engine.vllm.compat.shared_tails import SHARED_TAILS
from ai_query.engine.vllm.tokens import PromptTokens
from ai_query.errors import EngineDeadError
from ai_query.machine import Machine, this_machine

if TYPE_CHECKING:
    from ai_query.engine.backends.backend import GenerationRequest

log = logging.getLogger(__name__)

#: Most characters of a row's error message from a vLLM backend (on one line, see
#: :func:`ai_query.text.one_line`).
ROW_ERROR_LIMIT = 500


def engine_defaults(kind: str, machine: Machine | None = None) -> dict[str, Any]:
    """The engine arguments a ``generate`` or ``pooling`` model gets on ``machine`` (this one by
    default) unless its served entity's ``engine_args`` say otherwise. The rule:

    - dtype: ``bfloat16`` where the machine computes it natively (:attr:`Machine.native_bf16`),
      else ``float32``; embedding models always ``float32`` (small, and exact vectors);
    - on a CPU: eager mode (compiled mode recompiles at every start: 50-130 s), 32-token KV
      blocks and the scheduler limits ``LLM`` gets on a CPU (256 sequences, 4,096 tokens a
      step, 8,192 for embeddings);
    - on a CPU, rows behind a shared instruction share its last, partial KV block
      (:mod:`.compat.shared_tails`, a KV connector; ``kv_transfer_config: null`` turns it off,
      another connector replaces it);
    - on a GPU: vLLM's own block size, scheduler limits and CUDA graphs.

    Block size and scheduler limits were measured on both kinds of CPU these machines have
    (``bench/prefix_blocks.py``, ``bench/README.md``): vLLM's CPU build defaults to 128-token
    blocks, and a prompt's prefix cache hits whole blocks only, so rows behind one shared
    instruction each recompute up to 127 tokens of it and short prompts pay for whole blocks
    in the CPU attention kernels. 64 rows behind one 1,332-token instruction (8 tokens each):
    2-core AVX2 36 s with 128-token blocks, 16 s with 32; 2-core AVX512-BF16 5.1 s with 128,
    2.6 s with 64, 3.0 s with 32; 64 short unique prompts there 1.45 s, 1.37 s, 0.73 s. 32 is
    the smallest size vLLM's CPU attention takes. On the AVX512-BF16 CPU, 256 rows behind one
    instruction took 6.2-9.9 s with these settings, 6.5-10.3 s with 2,048 tokens a step,
    7.1-11.8 s with 8,192, 6.8-11.0 s with 128 sequences; vLLM's defaults (compiled, 128-token
    blocks) 16.6-17.5 s.
    """
    machine = machine or this_machine()
    if kind == "pooling":
        return {
            "runner": "pooling",
            "dtype": "float32",
            "enforce_eager": True,
            "max_num_seqs": 256,
            "max_num_batched_tokens": 8192,
            "disable_log_stats": True,
        }
    args: dict[str, Any] = {
        "dtype": "bfloat16" if machine.native_bf16 else "float32",
        "max_model_len": 2048,
        "disable_log_stats": True,
        # Compact JSON in structured output: small models otherwise spend tokens on whitespace.
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
    }
    if machine.gpu is None:
        args.update(
            block_size=32, enforce_eager=True, max_num_seqs=256, max_num_batched_tokens=4096,
            kv_transfer_config=dict(SHARED_TAILS),
        )
    return args


class VLLMModel:
    """One local model on vLLM: its engine arguments, its supervisor, and its start.

    Subclasses say which defaults apply (:attr:`kind`) and how an engine is opened, tested and
    shut down; :meth:`start` runs one start at a time, as its own task, so a caller that goes
    away does not stop a start under way (its engine is kept, or shut down by :meth:`close`).
    """

    kind: ClassVar[str]
    """``generate`` or ``pooling``: which :func:`engine_defaults` apply."""

    def __init__(
        self,
        model_dir: Path,
        *,
        engine_args: Mapping[str, Any] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.on_start = on_start
        """Called after each (re)start of the engine (the registry orders exit hooks with it)."""
        args = dict(engine_args or {})
        self.tool_call_parser: str | None = args.pop("tool_call_parser", None)
        """Name of the vLLM tool parser for ``tool_choice="auto"`` (not an engine argument)."""
        self.reasoning_parser: str | None = args.pop("reasoning_parser", None)
        """Name of the vLLM reasoning parser that splits a reasoning model's reasoning from its
        answer (``deepseek_r1``, ``qwen3``, ...); structured output then constrains the answer
        alone (vLLM's ``structured_outputs_config.reasoning_parser``)."""
        self.engine_args = {**engine_defaults(self.kind), **args}
        if self.reasoning_parser is not None:
            structured = dict(self.engine_args.get("structured_outputs_config") or {})
            structured.setdefault("reasoning_parser", self.reasoning_parser)
            self.engine_args["structured_outputs_config"] = structured
        # vLLM engines run only in `ai-query serve` (a private server, too, is that command),
        # which keeps each model's backend, and so a FAILED engine, as long as it runs.
        self.supervisor = Supervisor(
            f"the vLLM engine for {model_dir.name}",
            revival=f"restart the engine server (ai-query serve, pid {os.getpid()})",
        )
        """Restarts after the engine died; the engine's health."""
        self._start_lock: asyncio.Lock | None = None
        self.prompt_tokens = PromptTokens(model_dir)
        """Counts prompt tokens as this engine will, without starting it."""

    def health(self) -> EngineHealth:
        """The engine's health."""
        return self.supervisor.health()

    async def count_tokens(
        self, texts: Sequence[str], request: GenerationRequest | None
    ) -> list[int]:
        """Prompt tokens of each text, as the engine will report them (no engine needed)."""
        return await asyncio.to_thread(self.prompt_tokens.count, texts, request)

    async def start(self) -> None:
        """Start the engine: once, and again after it died.

        Raises:
            EngineDeadError: it could not start, or died more often than the restart policy
                allows (the message names the last cause and what brings it back).
        """
        if self.supervisor.state is EngineState.FAILED:
            raise self.supervisor.failure()  # what is left of its engine answers nothing
        if self._running() and not self.supervisor.needs_start:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        await self._start_lock.acquire()
        starting = asyncio.ensure_future(self._start_holding(self._start_lock))
        starting.add_done_callback(_retrieve_exception)
        await asyncio.shield(starting)

    async def _start_holding(self, lock: asyncio.Lock) -> None:
        """The start itself, as its own task; releases ``lock`` (held by :meth:`start`)."""
        try:
            if self._running() and not self.supervisor.needs_start:
                return
            delay = self.supervisor.starting()
            if self._running():
                gc.unfreeze()  # the dead engine's objects may be collected again
            self._discard()
            if delay:
                log.warning(
                    "restarting vLLM for %s: waiting %g s, then starting it", self.model_dir.name,
                    delay,
                )
                await asyncio.sleep(delay)
            began = time.monotonic()
            try:
                await self._open()
            except EngineDeadError as exc:
                self.supervisor.start_failed(exc)
                raise
            self.supervisor.started()
            freeze_heap()
            if delay:  # the wait is the policy's; the start is vLLM's own (seconds on a CPU)
                log.warning(
                    "restarted vLLM for %s: waited %g s, started in %.1f s", self.model_dir.name,
                    delay, time.monotonic() - began,
                )
            if self.on_start is not None:
                self.on_start()
        finally:
            lock.release()

    async def close(self) -> None:
        """Shut the engine down (a later request starts it again); a start under way finishes
        first, so the engine it builds is shut down too."""
        if self._start_lock is not None:
            async with self._start_lock:
                self._shut_down()
        else:
            self._shut_down()
        gc.unfreeze()  # see freeze_heap

    def _running(self) -> bool:
        """Whether an engine is open (alive or not)."""
        raise NotImplementedError

    def _discard(self) -> None:
        """Release what is left of a dead engine before a restart."""

    async def _open(self) -> None:
        """Build and keep the engine.

        Raises:
            EngineDeadError: vLLM could not start it.
        """
        raise NotImplementedError

    def _shut_down(self) -> None:
        """Shut the engine down and tell the supervisor (an orderly stop)."""
        raise NotImplementedError


def freeze_heap() -> None:
    """Leave every object alive now out of later garbage collections (``gc.freeze``), as
    vLLM's own API server does once it has started: an engine's process holds ~670,000 objects
    after vLLM starts, and each full collection walked them all, pausing the engine loop
    (rows' renders, answers) for ~0.4 s during a query. Objects freed by reference counting
    are still freed; a restart or a close unfreezes, so an old engine's cycles are collected."""
    gc.collect()
    gc.freeze()


def _retrieve_exception(task: asyncio.Future[None]) -> None:
    """Mark a start's failure as seen (its caller may have gone away; the next start reports)."""
    if not task.cancelled():
        task.exception()

