"""The vLLM backend for embedding models: whole batches through one ``LLM.embed`` call.

An embedding is one forward pass and no decoding, so what a request costs around the model
(an ``AsyncLLM`` request, a message to the engine process and a coroutine per text) is about
what the model costs: one request per text ran at 0.69x of ``LLM.embed``. Here the texts of a
batch go to vLLM's offline engine in one call, on a thread that owns the engine (built and used
there, in this process, as ``LLM`` runs it); batches that arrive while one runs wait and go
together in the next call, so the engine sees large batches and the caller's threads only queue.

A text the model cannot take (longer than its context) fails alone: when a call raises, its
texts are split in halves and retried, down to the one text that fails.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ai_query.engine.backends.backend import (
    Completion,
    CompletionChunk,
    Embedding,
    EmbeddingResult,
    GenerationRequest,
    RowFailure,
)
from ai_query.engine.core.loop import settle
from ai_query.engine.vllm.model import ROW_ERROR_LIMIT, VLLMModel
from ai_query.engine.vllm.setup import building
from ai_query.errors import EngineDeadError, EngineError
from ai_query.text import one_line

log = logging.getLogger(__name__)

#: One engine call takes the waiting batches until they hold this many texts (at least one).
MAX_TEXTS_PER_CALL = 8192
#: How long :meth:`VLLMEmbeddingBackend.close` waits for the engine's thread to release vLLM.
CLOSE_WAIT_S = 60.0


@dataclass
class _Job:
    """One caller's texts, and where their results go."""

    texts: list[str]
    future: asyncio.Future[list[EmbeddingResult]]
    loop: asyncio.AbstractEventLoop

    def finish(self, results: list[EmbeddingResult] | BaseException) -> None:
        self.loop.call_soon_threadsafe(settle, self.future, results)


@dataclass
class _Worker:
    """What the engine's thread shares with callers: its queue and its state."""

    ready: threading.Event = field(default_factory=threading.Event)
    pending: list[_Job] = field(default_factory=list)
    wake: threading.Condition = field(default_factory=threading.Condition)
    closing: bool = False
    error: BaseException | None = None
    llm: Any = None
    thread: threading.Thread | None = None


class VLLMEmbeddingBackend(VLLMModel):
    """Runs one local embedding model with vLLM's offline engine on its own thread."""

    kind = "pooling"

    def __init__(self, model_dir: Path, **options: Any) -> None:
        super().__init__(model_dir, **options)  # engine_args, on_start: see VLLMModel
        self._worker: _Worker | None = None
        self._stopping: list[threading.Thread] = []
        self.engine_calls = 0
        """``LLM.embed`` calls made (each takes every batch that was waiting)."""

    def _running(self) -> bool:
        return self._worker is not None

    async def _open(self) -> None:
        """Build the engine on its own thread, which then serves it."""
        worker = _Worker()
        worker.thread = threading.Thread(
            target=self._serve,
            args=(worker,),
            name=f"ai-query-embed-{self.model_dir.name}",
            daemon=True,
        )
        worker.thread.start()
        await asyncio.get_running_loop().run_in_executor(None, worker.ready.wait)
        if worker.error is not None:
            raise EngineDeadError(
                f"vLLM could not start {self.model_dir}: {worker.error}"
            ) from worker.error
        self._worker = worker

    async def embed_many(self, texts: Sequence[str]) -> list[EmbeddingResult]:
        """Embed ``texts``: one result per text, in order (a RowFailure for one that fails)."""
        if not texts:
            return []
        await self.start()
        worker = self._worker
        assert worker is not None
        loop = asyncio.get_running_loop()
        job = _Job(list(texts), loop.create_future(), loop)
        with worker.wake:
            if worker.closing:
                raise EngineDeadError(f"{self.model_dir.name}'s engine thread stopped")
            worker.pending.append(job)
            worker.wake.notify()
        return await job.future

    async def complete(self, text: str, request: GenerationRequest) -> Completion:
        """Embedding models do not generate."""
        raise EngineError(f"{self.model_dir.name} is an embeddings model; it cannot generate")

    async def score_choices(self, text: str, request: GenerationRequest) -> None:
        """Embedding models do not generate."""
        raise EngineError(f"{self.model_dir.name} is an embeddings model; it cannot generate")

    async def stream(self, text: str, request: GenerationRequest) -> AsyncIterator[CompletionChunk]:
        """Embedding models do not generate."""
        raise EngineError(f"{self.model_dir.name} is an embeddings model; it cannot generate")
        yield  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        """Shut the engine down (see :meth:`VLLMModel.close`) and wait, at most
        :data:`CLOSE_WAIT_S` seconds, until its thread has released vLLM's engine: an engine
        closed at exit is gone before the interpreter tears down."""
        await super().close()
        deadline = time.monotonic() + CLOSE_WAIT_S
        while self._stopping:
            if not self._stopping[0].is_alive():
                self._stopping.pop(0)
            elif time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the loop keeps serving other models meanwhile
            else:
                log.warning("%s: its engine thread did not stop within %g s",
                            self.model_dir.name, CLOSE_WAIT_S)
                self._stopping.clear()

    def _shut_down(self) -> None:
        """Stop the engine's thread (a later request starts it again)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        with worker.wake:
            worker.closing = True
            worker.wake.notify()
        if worker.thread is not None:
            self._stopping.append(worker.thread)
        self.supervisor.stopped()

    # --- the engine's thread ---------------------------------------------------------------
    def _serve(self, worker: _Worker) -> None:
        try:
            worker.llm = self._build()
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            worker.error = exc
            worker.ready.set()
            return
        worker.ready.set()
        while True:
            with worker.wake:
                while not worker.pending and not worker.closing:
                    worker.wake.wait()
                if worker.closing:
                    jobs, worker.pending = worker.pending, []
                    for job in jobs:
                        job.finish(EngineDeadError(f"{self.model_dir.name} was shut down"))
                    break
                jobs = _take(worker.pending)
            texts = [t for job in jobs for t in job.texts]
            try:
                results = self._embed(worker.llm, texts)
            except Exception as exc:  # noqa: BLE001 - every waiting caller hears of it
                for job in jobs:
                    job.finish(EngineError(f"embedding with {self.model_dir.name} failed: {exc}"))
                continue
            except BaseException:
                # Not an embedding's failure (SystemExit, ...): the thread ends, and no caller
                # is left waiting for it.
                self._abandon(worker, jobs)
                raise
            start = 0
            for job in jobs:
                job.finish(results[start : start + len(job.texts)])
                start += len(job.texts)
        worker.llm = None

    def _build(self) -> Any:
        with building(self.model_dir.name):
            from vllm import LLM

            log.info("starting vLLM for %s (%s)", self.model_dir, self.engine_args)
            kwargs = {"distributed_executor_backend": "uni", **self.engine_args}
            return LLM(model=str(self.model_dir), **kwargs)

    def _abandon(self, worker: _Worker, jobs: list[_Job]) -> None:
        """Fail ``jobs`` and every waiting one: the engine's thread is ending."""
        with worker.wake:
            worker.closing = True
            jobs, worker.pending = [*jobs, *worker.pending], []
        for job in jobs:
            job.finish(EngineDeadError(f"{self.model_dir.name}'s engine thread stopped"))
        worker.llm = None

    def _embed(self, llm: Any, texts: list[str]) -> list[EmbeddingResult]:
        """Embed with one engine call; on an error, isolate the failing texts by halving."""
        self.engine_calls += 1
        try:
            outputs = llm.embed(texts, use_tqdm=False)
        except Exception as exc:  # noqa: BLE001 - vLLM's input checks raise their own types
            if len(texts) == 1:
                return [RowFailure(one_line(exc, ROW_ERROR_LIMIT))]
            half = len(texts) // 2
            return self._embed(llm, texts[:half]) + self._embed(llm, texts[half:])
        return [
            Embedding(
                np.asarray(out.outputs.embedding, dtype=np.float32),
                len(out.prompt_token_ids or ()),
            )
            for out in outputs
        ]


def _take(pending: list[_Job]) -> list[_Job]:
    """The waiting jobs for one engine call (whole jobs, up to MAX_TEXTS_PER_CALL texts)."""
    taken: list[_Job] = []
    count = 0
    while pending and (not taken or count + len(pending[0].texts) <= MAX_TEXTS_PER_CALL):
        job = pending.pop(0)
        taken.append(job)
        count += len(job.texts)
    return taken
