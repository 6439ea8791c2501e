"""A process that vLLM would spawn starts from the waiting zygote: same target, arguments and
environment as a fresh spawn, without the imports (real processes; a light module stands in for
vLLM's engine modules)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from ai_query.engine.vllm import zygote as vllm_zygote
from ai_query.engine.vllm.zygote import Zygote, start_zygote, zygote_context


def _report(path: str) -> None:
    Path(path).write_text(json.dumps({
        "pid": os.getpid(),
        "env": os.environ.get("AIQ_ZYGOTE_TEST"),
        "preloaded": "colorsys" in sys.modules,
    }))


@pytest.fixture(autouse=True)
def no_spare() -> object:
    yield
    spare = vllm_zygote._take()
    if spare is not None:
        spare.discard()


def _run(tmp_path: Path, name: str) -> dict[str, object]:
    out = tmp_path / f"{name}.json"
    proc = zygote_context().Process(target=_report, args=(str(out),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    data: dict[str, object] = json.loads(out.read_text())
    assert data["pid"] == proc.pid
    return data


def test_the_first_process_starts_from_the_zygote_and_the_next_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zygote = Zygote(modules=("colorsys",), env={})
    start_zygote(zygote)
    # Set after the zygote started: it arrives with the spawn, as a fresh spawn would see it.
    monkeypatch.setenv("AIQ_ZYGOTE_TEST", "sent at spawn")
    first = _run(tmp_path, "first")
    assert first == {"pid": zygote.pid, "env": "sent at spawn", "preloaded": True}
    second = _run(tmp_path, "second")
    assert second["pid"] != zygote.pid and second["env"] == "sent at spawn"


def test_a_zygote_no_engine_takes_exits(tmp_path: Path) -> None:
    zygote = Zygote(modules=(), env={})
    start_zygote(zygote, idle_s=0.2)
    deadline = time.monotonic() + 30
    while zygote.alive():
        assert time.monotonic() < deadline, "the idle zygote did not exit"
        time.sleep(0.1)
    assert vllm_zygote._take() is None
    assert _run(tmp_path, "fresh")["pid"] != zygote.pid


def test_a_zygote_started_with_other_import_time_settings_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    zygote = Zygote(modules=("colorsys",), env={"OMP_NUM_THREADS": "3"})
    assert zygote.unfit([], zygote.executable) is not None
    start_zygote(zygote)
    data = _run(tmp_path, "fresh")
    assert data["pid"] != zygote.pid
    assert not zygote.alive()  # discarded and reaped


def test_the_reason_names_the_variable_never_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_at_start")
    zygote = Zygote(modules=(), env={})
    try:
        monkeypatch.setenv("HF_TOKEN", "hf_secret_later")
        reason = zygote.unfit([], zygote.executable) or ""
        assert "HF_TOKEN" in reason and "secret" not in reason
    finally:
        zygote.discard()


def test_path_entries_that_do_not_exist_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/no/such/dir:")  # what importing OpenCV adds
    zygote = Zygote(modules=(), env={"LD_LIBRARY_PATH": ""})
    try:
        assert zygote.unfit([], zygote.executable) is None
        monkeypatch.setenv("LD_LIBRARY_PATH", os.path.dirname(sys.executable))
        assert "LD_LIBRARY_PATH" in (zygote.unfit([], zygote.executable) or "")
    finally:
        zygote.discard()


def test_what_importing_set_in_both_processes_does_not_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(vllm_zygote, "_imported_env", None)
    zygote = Zygote(modules=(), env={})
    try:
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/inductor")  # importing torch did it
        assert "TORCHINDUCTOR_CACHE_DIR" in (zygote.unfit([], zygote.executable) or "")
        vllm_zygote.note_imports_done()
        assert zygote.unfit([], zygote.executable) is None
        monkeypatch.setenv("OMP_NUM_THREADS", "7")  # set after the imports: for the engine only
        assert "OMP_NUM_THREADS" in (zygote.unfit([], zygote.executable) or "")
    finally:
        zygote.discard()


def test_the_predicted_cpu_environment_names_vllm_s_settings() -> None:
    env = vllm_zygote.predicted_cpu_environment()
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert env["TORCHINDUCTOR_COMPILE_THREADS"] == "1"
    assert "libgomp" in env.get("LD_PRELOAD", "libgomp")


def test_a_vllm_that_moved_the_spawn_hook_discards_the_zygote_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ai_query.engine.vllm import compat

    zygote = Zygote(modules=(), env={})
    start_zygote(zygote)
    moved = compat.Internal("vllm.v1.engine.utils", "get_mp_context_moved", "a test")
    monkeypatch.setattr(compat, "GET_MP_CONTEXT", moved)
    with caplog.at_level(logging.WARNING, logger=vllm_zygote.__name__):
        vllm_zygote.install()
    assert (
        "the zygote is not used: vllm.v1.engine.utils.get_mp_context_moved is missing in vLLM "
        f"{compat.vllm_version()} (ai_query is tested with {compat.TESTED_VLLM}.x)"
    ) in caplog.text
    assert vllm_zygote._take() is None
    assert not zygote.alive(), "discarded at once, not left idle with its imports"
