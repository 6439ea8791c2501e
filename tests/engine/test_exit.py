"""A process with engines exits cleanly and soon: its backends close at exit on a live engine
loop, vLLM's engines before the interpreter tears down (real processes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT


def _exit_of(script: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True,
        text=True, timeout=timeout,
    )


def test_backends_made_before_the_engine_loop_close_at_exit() -> None:
    # The loop's own exit hook once ran first: closing the backends then waited for ever.
    done = _exit_of(
        """
        from ai_query.catalog import Catalog
        from ai_query.engine.backends.deterministic import deterministic_backend_factory
        from ai_query.engine.backends.registry import shared_backend
        from ai_query.engine.core.loop import shared_loop

        entity = Catalog.default().get("smollm2-135m-instruct").config.served_entities[0]
        shared_backend(entity, deterministic_backend_factory)
        shared_loop()
        print("exiting")
        """,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exiting"


@pytest.mark.slow
def test_a_process_that_ran_vllm_engines_exits_cleanly() -> None:
    # The engines are built where vLLM is first imported, as in tests and the in-process engine.
    done = _exit_of(
        """
        from ai_query.catalog import Catalog
        from ai_query.engine.core.batch import align_results, request_batch
        from ai_query.engine.local import LocalEngine
        from ai_query.options import CallOptions, ModelParameters

        if __name__ == "__main__":
            engine = LocalEngine(Catalog.default(), memo_entries=0)
            for options in (
                CallOptions(endpoint="smollm2-135m-instruct",
                            model_parameters=ModelParameters(max_tokens=4)),
                CallOptions(endpoint="all-minilm-l6-v2"),
            ):
                out = align_results(engine.run(request_batch(["hi"], options)), 1)
                assert out.column("error").to_pylist() == [None]
            print("exiting")
        """,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("exiting")
    for sign in ("Exception ignored", "Traceback", "terminate called"):
        assert sign not in done.stderr, done.stderr[-3000:]
