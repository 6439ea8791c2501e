"""The embeddings backend's thread around vLLM's offline engine: a failing call fails its callers
and the thread serves on; anything that is not an error ends the thread without leaving a caller
waiting; close waits until the thread let go of the engine (a stand-in ``LLM``, built at once)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ai_query.engine.backends.backend import Embedding, RowFailure
from ai_query.engine.vllm.pooling import VLLMEmbeddingBackend
from ai_query.errors import EngineDeadError


class StandInLLM:
    """Answers ``LLM.embed`` as vLLM does; raises what ``fail`` holds for a text that says so."""

    def __init__(self) -> None:
        self.fail: dict[str, BaseException] = {}

    def embed(self, texts: list[str], *, use_tqdm: bool) -> list[Any]:
        for text in texts:
            if text in self.fail:
                raise self.fail[text]
        return [SimpleNamespace(outputs=SimpleNamespace(embedding=[float(len(t)), 1.0]),
                                prompt_token_ids=[0] * len(t)) for t in texts]


class StandInBackend(VLLMEmbeddingBackend):
    def __init__(self, model_dir: Path, llm: StandInLLM) -> None:
        super().__init__(model_dir)
        self.llm = llm

    def _build(self) -> Any:
        return self.llm


@pytest.fixture
def backend(tmp_path: Path) -> StandInBackend:
    return StandInBackend(tmp_path / "minilm", StandInLLM())


def test_a_failing_text_fails_alone_and_the_thread_serves_on(backend: StandInBackend) -> None:
    backend.llm.fail["bad"] = ValueError("too long")

    async def scenario() -> tuple[list[Any], list[Any]]:
        first = await backend.embed_many(["ab", "bad", "abc"])
        second = await backend.embed_many(["abcd"])
        await backend.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first[0], Embedding) and isinstance(first[2], Embedding)
    assert np.array_equal(first[2].vector, np.asarray([3.0, 1.0], dtype=np.float32))
    assert isinstance(first[1], RowFailure) and "too long" in str(first[1])
    assert isinstance(second[0], Embedding)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # it ends
def test_what_is_not_an_error_ends_the_thread_and_no_caller_waits_for_ever(
    backend: StandInBackend,
) -> None:
    backend.llm.fail["stop"] = SystemExit(3)

    async def scenario() -> list[str]:
        messages = []
        for texts in (["stop"], ["later"]):
            with pytest.raises(EngineDeadError) as info:
                await asyncio.wait_for(backend.embed_many(texts), 30)
            messages.append(str(info.value))
        await backend.close()
        return messages

    assert asyncio.run(scenario()) == ["minilm's engine thread stopped"] * 2


def test_close_waits_until_the_thread_let_go_of_the_engine(backend: StandInBackend) -> None:
    async def scenario() -> Any:
        await backend.embed_many(["a"])
        worker = backend._worker
        assert worker is not None and worker.thread is not None
        await backend.close()
        return worker

    worker = asyncio.run(scenario())
    assert worker.thread is not None and not worker.thread.is_alive()
    assert worker.llm is None
