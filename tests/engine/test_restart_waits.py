"""Restarts of a vLLM model as its requests meet them: the waits the README states (1, 2, 4 s,
from the request that restarts it), and what rows and requests are told before and after the
restart limit (a stand-in engine that starts at once and a recorded sleep; no vLLM engine)."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path

import pytest

from ai_query.engine.process.supervision import EngineState
from ai_query.engine.vllm import model as vllm_model
from ai_query.engine.vllm.backend import VLLMBackend
from ai_query.engine.vllm.model import VLLMModel
from ai_query.errors import EngineDeadError


class QuickModel(VLLMModel):
    """A VLLMModel whose engine opens at once (the supervised start is the real one)."""

    kind = "generate"

    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir)
        self.engine: object | None = None
        self.opened = 0

    def _running(self) -> bool:
        return self.engine is not None

    async def _open(self) -> None:
        self.opened += 1
        self.engine = object()

    def _discard(self) -> None:
        self.engine = None

    def _shut_down(self) -> None:
        self.engine = None
        self.supervisor.stopped()


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the start sleeps, recorded; each returns at once."""
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, *args: object) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(vllm_model.asyncio, "sleep", sleep)
    return waits


def test_restarts_wait_1_2_4_s_from_the_request_then_the_engine_stays_failed(
    tmp_path: Path, slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The heap freeze after each start is a full collection of this (pytest) process, ~0.5 s
    # on 2 cores: counted here, timed by nothing (its own test below checks what it does).
    froze: list[int] = []
    monkeypatch.setattr(vllm_model, "freeze_heap", lambda: froze.append(1))
    model = QuickModel(tmp_path / "smollm2")
    took: list[float] = []

    async def scenario() -> list[str]:
        await model.start()
        for _ in range(3):
            model.supervisor.died("killed")  # its engine object stays until the restart
            began = time.monotonic()
            await model.start()
            took.append(time.monotonic() - began)
        model.supervisor.died("killed")
        errors = []
        for _ in range(2):  # every later request, not only the first
            with pytest.raises(EngineDeadError) as info:
                await model.start()
            errors.append(str(info.value))
        return errors

    errors = asyncio.run(scenario())
    assert slept == [1.0, 2.0, 4.0], "the waits are those the README states"
    assert max(took) < 0.5, f"something besides the wait held the restart: {took}"
    assert model.opened == 4
    assert len(froze) == 4, "every start, the restarts too, freezes the heap"
    assert model.supervisor.state is EngineState.FAILED
    for error in errors:
        assert error == (
            "the vLLM engine for smollm2 is FAILED: it died 4 times within 300 s (last cause: "
            "killed) and is not restarted again; restart the engine server (ai-query serve, "
            f"pid {os.getpid()}) to bring it back"
        )


def test_a_started_engine_leaves_the_heap_out_of_full_collections_until_it_restarts_or_closes(
    tmp_path: Path, slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As vLLM's own server does after its start: what is alive once the engine has started is
    frozen (over a started vLLM's heap each full collection paused the engine loop ~0.4 s);
    a restart unfreezes before the dead engine goes, a close after the engine stopped."""
    gc.unfreeze()
    thawed: list[object | None] = []
    real_unfreeze = gc.unfreeze

    def unfreeze() -> None:
        thawed.append(model.engine)
        real_unfreeze()

    monkeypatch.setattr(gc, "unfreeze", unfreeze)
    model = QuickModel(tmp_path / "smollm2")
    frozen: list[int] = []

    async def scenario() -> None:
        await model.start()
        frozen.append(gc.get_freeze_count())
        dead = model.engine
        model.supervisor.died("killed")
        await model.start()  # unfreezes while the dead engine is still held, then freezes
        assert thawed == [dead] and model.engine is not dead
        frozen.append(gc.get_freeze_count())
        await model.close()
        frozen.append(gc.get_freeze_count())

    try:
        asyncio.run(scenario())
    finally:
        real_unfreeze()
    assert frozen[0] > 10_000 and frozen[1] > 10_000  # the test process's whole heap
    assert thawed[-1] is None  # closed: the engine is gone before the heap is unfrozen
    assert frozen[2] == 0


def test_rows_on_a_dead_engine_say_what_happens_next(tmp_path: Path) -> None:
    from vllm.v1.engine.exceptions import EngineDeadError as VLLMEngineDead

    backend = VLLMBackend(tmp_path / "smollm2")

    async def scenario() -> list[str]:
        messages = []
        for _ in range(4):
            backend.supervisor.starting()  # stands for a (re)start of its engine
            backend.supervisor.started()
            with pytest.raises(EngineDeadError) as info:
                async with backend._guard():
                    raise VLLMEngineDead()  # what vLLM raises when its EngineCore is gone
            messages.append(str(info.value))
        with pytest.raises(EngineDeadError) as info:
            await backend.start()
        return [*messages, str(info.value)]

    messages = asyncio.run(scenario())
    died = "the vLLM engine for smollm2 died: its EngineCore process exited; "
    revival = f"restart the engine server (ai-query serve, pid {os.getpid()}) to bring it back"
    assert messages == [
        died + "the next request restarts it (after a wait of 1 s)",
        died + "the next request restarts it (after a wait of 2 s)",
        died + "the next request restarts it (after a wait of 4 s)",
        died + "it is FAILED: it died 4 times within 300 s and is not restarted again; " + revival,
        "the vLLM engine for smollm2 is FAILED: it died 4 times within 300 s (last cause: its "
        "EngineCore process exited) and is not restarted again; " + revival,
    ]
    assert not any("stack trace" in m for m in messages), "the client sees no server log"


@pytest.mark.slow
def test_a_private_server_past_its_restart_limit_says_to_restart_the_program() -> None:
    from ai_query.engine.core.batch import request_batch
    from ai_query.engine.process.embedded import EmbeddedEngine
    from ai_query.engine.process.supervision import RestartPolicy
    from ai_query.options import CallOptions

    engine = EmbeddedEngine(
        engine_kind="deterministic", policy=RestartPolicy(max_restarts=1, backoff_s=0.1)
    )
    batch = request_batch(["hi"], CallOptions(endpoint="smollm2-135m-instruct"))
    try:
        for _ in range(2):
            assert engine.run(batch).num_rows == 1  # (re)starts the server that died
            server = engine.server
            assert server is not None
            server.kill()
            server.proc.wait(timeout=10)
        messages = []
        for _ in range(2):
            with pytest.raises(EngineDeadError) as info:
                engine.run(batch)
            messages.append(str(info.value))
    finally:
        engine.close()
    assert engine.supervisor.state is EngineState.FAILED
    assert messages == [
        "the private engine server is FAILED: it died 2 times within 300 s (last cause: the "
        f"engine server (pid {server.pid}) exited with code -9) and is not restarted again; "
        f"restart this program (pid {os.getpid()}) to bring it back"
    ] * 2
