"""Cold start: engines build off the engine loop, once, one at a time; a private server and a
query's models start before its first batch.

vLLM's engine process is the boundary mocked in the first tests: :class:`SlowBuild` is the real
:class:`VLLMBackend` whose ``_build`` (the call that starts vLLM's engine process and waits for
it) sleeps instead, holding the process's build slot as the real one does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ai_query.catalog import Catalog, ServedEntity
from ai_query.engine.backends.registry import shared_backend
from ai_query.engine.core.batch import request_batch
from ai_query.engine.core.loop import EngineLoop
from ai_query.engine.local import LocalEngine
from ai_query.engine.process.embedded import EmbeddedEngine
from ai_query.engine.process.supervision import EngineState
from ai_query.engine.vllm.backend import VLLMBackend
from ai_query.engine.vllm.setup import building
from ai_query.errors import AIQueryError
from ai_query.options import CallOptions
from ai_query.query_endpoints import start_early

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
BUILD_S = 0.5


class _FakeAsyncLLM:
    errored = False

    def __init__(self) -> None:
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True


class SlowBuild(VLLMBackend):
    """A vLLM backend whose engine takes ``BUILD_S`` seconds to build."""

    def __init__(self, entity: ServedEntity) -> None:
        super().__init__(Path(str(entity.entity_name)))
        self.builds: list[tuple[float, float, str]] = []
        """(start, end, thread name) of each build."""

    def _build(self) -> Any:
        with building(self.model_dir.name):
            started = time.monotonic()
            time.sleep(BUILD_S)
            self.builds.append((started, time.monotonic(), threading.current_thread().name))
            return _FakeAsyncLLM()


_engines = itertools.count()


def _backends(endpoints: list[str]) -> tuple[EngineLoop, list[SlowBuild]]:
    """Backends no other test shares (the registry keys backends by the factory's name)."""

    def factory(entity: ServedEntity) -> Any:
        return SlowBuild(entity)

    factory.__qualname__ = f"SlowBuild-{next(_engines)}"
    engine = LocalEngine(Catalog.default(), backend_factory=factory, loop=EngineLoop("test-cold"))
    entities = [engine.catalog.get(e).config.served_entities[0] for e in endpoints]
    return engine.loop, [shared_backend(e, factory) for e in entities]


def test_engines_build_off_the_loop_one_at_a_time() -> None:
    loop, (chat, other) = _backends([CHAT, "databricks-gte-large-en"])

    async def both() -> float:
        starts = asyncio.gather(chat.start(), other.start())
        await asyncio.sleep(0.1)
        ping = time.monotonic()
        await asyncio.sleep(0)  # the loop answers while both engines build
        waited = time.monotonic() - ping
        await starts
        return waited

    assert loop.run(both()) < 0.1
    (a_start, a_end, a_thread), = chat.builds
    (b_start, b_end, b_thread), = other.builds
    assert a_end <= b_start or b_end <= a_start, "two vLLM builds overlapped in one process"
    assert "test-cold" not in (a_thread, b_thread), "built on the engine loop"
    assert chat.health().state is other.health().state is EngineState.READY


def test_concurrent_starts_of_one_model_build_it_once() -> None:
    loop, (chat,) = _backends([CHAT])

    async def many() -> None:
        await asyncio.gather(*(chat.start() for _ in range(5)))

    loop.run(many())
    assert len(chat.builds) == 1


def test_a_caller_that_goes_away_does_not_stop_the_start_and_close_waits_for_it() -> None:
    loop, (chat,) = _backends([CHAT])

    async def give_up() -> None:
        task = asyncio.ensure_future(chat.start())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await chat.close()  # waits for the start under way, then shuts its engine down

    loop.run(give_up())
    assert len(chat.builds) == 1
    assert chat._engine is None and chat.health().state is EngineState.NOT_STARTED
    loop.run(chat.start())  # the start lock was released: a new start builds again
    assert len(chat.builds) == 2 and chat.health().state is EngineState.READY


def _marks(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_private_server_and_the_query_s_models_start_before_the_first_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timings = tmp_path / "timings.jsonl"
    monkeypatch.setenv("AI_QUERY_TIMINGS", str(timings))
    provider = {"name": "m", "provider": "openai-compatible", "task": "llm/v1/chat",
                "openai_config": {"openai_api_base": "http://127.0.0.1:9/v1",
                                  "openai_api_key": "not-used"}}
    catalog = Catalog.from_data({"include_defaults": True, "endpoints": [
        {"name": "ext-chat", "config": {"served_entities": [{"external_model": provider}]}}]})
    engine = EmbeddedEngine(catalog, engine_kind="deterministic")
    try:
        start_early(engine, [(f"SELECT ai_query('{CHAT}', x), ai_query('{EMBED}', y), "
                              "ai_query('ext-chat', z) FROM t", "databricks")])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (engine.server is None or len(
                [m for m in _marks(timings) if m["step"] == "server: warm"]) < 2):
            time.sleep(0.1)
        server = engine.server
        assert server is not None, "start_early did not start the server"
        warmed = {m["endpoint"] for m in _marks(timings) if m["step"] == "server: warm"}
        assert warmed == {CHAT, EMBED}, "the server warmed other than the query's local models"
        out = engine.run(request_batch(["hello"], CallOptions(endpoint=CHAT)))
        assert out.column("error").to_pylist() == [None]
        assert engine.server is server, "the first batch used another server"
    finally:
        engine.close()


def test_sql_without_a_model_call_or_with_a_bad_one_starts_nothing() -> None:
    engine = EmbeddedEngine(engine_kind="deterministic")
    start_early(engine, [("SELECT 1", "databricks"), ("SELECT ai_query('nope', 'x')", "databricks")])
    time.sleep(0.2)
    assert engine.server is None


@pytest.mark.slow
def test_a_warmed_model_that_cannot_start_fails_the_first_batch_with_its_cause(
    tmp_path: Path,
) -> None:
    model = tmp_path / "broken-model"  # a model directory vLLM cannot load
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "no-such-architecture"}')
    catalog = Catalog.from_data({"include_defaults": False, "endpoints": [
        {"name": "broken", "config": {"served_entities": [
            {"entity_name": str(model), "task": "llm/v1/chat"}]}}]})
    engine = EmbeddedEngine(catalog)
    try:
        started = time.monotonic()
        start_early(engine, [("SELECT ai_query('broken', 'hi')", "databricks")])
        with pytest.raises(AIQueryError, match="vLLM could not start") as caught:
            engine.run(request_batch(["hi"], CallOptions(endpoint="broken")))
        assert "no-such-architecture" in str(caught.value), "the cause is named"
        assert time.monotonic() - started < 180, "the first batch waited for a start timeout"
    finally:
        engine.close()
