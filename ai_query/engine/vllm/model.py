"""What vLLM's two backends share: engine defaults for this machine, and a supervised start.

:mod:`.backend` runs generative models on vLLM's ``AsyncLLM``; :mod:`.pooling` runs
embedding models on its offline ``LLM``. Both are a :class:`VLLMModel`: built off the engine
loop (see :mod:`.setup`), once, and again after the engine died, as their
:class:`~ai_query.engine.process.supervision.Supervisor` allows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ai_query.engine.process.supervision import EngineHealth, EngineState, Supervisor
from ai_query.engine.vllm.tokens import PromptTokens
from ai_query.errors import EngineDeadError

if TYPE_CHECKING:
    from ai_query.engine.backends.backend import GenerationRequest

log = logging.getLogger(__name__)

#: Most characters of a row's error message from a vLLM backend (on one line, see
#: :func:`ai_query.text.one_line`).
ROW_ERROR_LIMIT = 500


#: Where an NVIDIA driver is, vLLM runs on the GPU.
NVIDIA_DEVICE = Path("/dev/nvidiactl")


def default_dtype(cpuinfo: Path = Path("/proc/cpuinfo"), gpu: Path = NVIDIA_DEVICE) -> str:
    """The generative models' default dtype: ``bfloat16`` where the hardware computes it natively
    (an NVIDIA GPU; a CPU with AVX512-BF16 or AMX; anything we cannot inspect), else ``float32``.

    On an x86 CPU without native bf16 (AVX2 only) vLLM's CPU kernels emulate bf16: measured on
    this project's 2-core AVX2 machine, 32 chats x 16 tokens took 72.7 s in bf16 and 26.8 s in
    float32, with the same answers.
    """
    if gpu.exists():
        return "bfloat16"
    try:
        flags = next(
            (line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), ""
        ).split()
    except OSError:
        return "bfloat16"
    if "avx2" in flags and not {"avx512_bf16", "amx_bf16"} & set(flags):
        return "float32"
    return "bfloat16"


def default_block_size(gpu: Path = NVIDIA_DEVICE) -> dict[str, int]:
    """The generative models' KV-cache block size: ``{"block_size": 32}`` on a CPU, nothing on a
    GPU (vLLM's own choice, 16 tokens, stays).

    vLLM's CPU build defaults to 128-token blocks. A prompt's prefix cache hits whole blocks
    only, so rows behind one shared instruction each recompute up to 127 tokens of it; and short
    prompts pay for whole blocks in the CPU attention kernels. Measured with ``LLM.chat`` on
    SmolLM2-135M (2-core AVX2, ``bench/prefix_blocks.py``): 64 rows behind one 1,332-token
    instruction took 36 s with 128-token blocks and 16 s with 32; 128 short unique prompts
    took 19-25 s and 9.5 s. 32 is the smallest size vLLM's CPU attention takes.
    """
    return {} if gpu.exists() else {"block_size": 32}


#: Engine arguments used unless the served entity's ``engine_args`` say otherwise. They are
#: the fast settings for a CPU (eager mode, :func:`default_dtype`, :func:`default_block_size`,
#: scheduler limits that ``LLM`` gets on CPU); on a GPU override ``enforce_eager`` and add
#: ``tensor_parallel_size`` as needed.
DEFAULT_ENGINE_ARGS: dict[str, dict[str, Any]] = {
    "generate": {
        "dtype": default_dtype(),
        **default_block_size(),
        "max_model_len": 2048,
        "enforce_eager": True,
        "max_num_seqs": 256,
        "max_num_batched_tokens": 4096,
        "disable_log_stats": True,
        # Compact JSON in structured output: small models otherwise spend tokens on whitespace.
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
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


class VLLMModel:
    """One local model on vLLM: its engine arguments, its supervisor, and its start.

    Subclasses say which defaults apply (:attr:`kind`) and how an engine is opened, tested and
    shut down; :meth:`start` runs one start at a time, as its own task, so a caller that goes
    away does not stop a start under way (its engine is kept, or shut down by :meth:`close`).
    """

    kind: ClassVar[str]
    """``generate`` or ``pooling``: which :data:`DEFAULT_ENGINE_ARGS` apply."""

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
        self.engine_args = {**DEFAULT_ENGINE_ARGS[self.kind], **args}
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


def _retrieve_exception(task: asyncio.Future[None]) -> None:
    """Mark a start's failure as seen (its caller may have gone away; the next start reports)."""
    if not task.cancelled():
        task.exception()

