"""LocalEngine behaviour with the deterministic backend (fast); the real engine is in
test_vllm_engine.py."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

from ai_query.engine.core.batch import align_results, request_batch
from ai_query.errors import ConfigError, SQLParseError, UnknownEndpointError
from ai_query.options import CallOptions, ModelParameters

CHAT = "smollm2-135m-instruct"


def run(engine, requests, **opts):  # type: ignore[no-untyped-def]
    batch = request_batch(requests, CallOptions(**opts))
    return align_results(engine.run(batch), len(requests))


def test_structured_output_is_typed(fake_engine) -> None:
    out = run(
        fake_engine, ["a", "b"], endpoint=CHAT, return_type="STRUCT<label: STRING, score: DOUBLE>"
    )
    assert out.schema.field("result").type == pa.struct(
        [("label", pa.string()), ("score", pa.float64())]
    )
    row = out.column("result").to_pylist()[0]
    assert set(row) == {"label", "score"} and isinstance(row["score"], float)


def test_embeddings_are_unit_float_lists(fake_engine) -> None:
    out = run(fake_engine, ["x", "y"], endpoint="databricks-gte-large-en")
    assert out.schema.field("result").type == pa.list_(pa.float32())
    vec = np.array(out.column("result").to_pylist()[0])
    assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-5


def test_bad_calls_fail_before_any_row(fake_engine) -> None:
    with pytest.raises(UnknownEndpointError, match="unknown endpoint 'nope'"):
        run(fake_engine, ["x"], endpoint="nope")
    with pytest.raises(SQLParseError, match="bad returnType"):
        run(fake_engine, ["x"], endpoint=CHAT, return_type="STRUCT<a:")
    with pytest.raises(ConfigError):
        run(fake_engine, ["x"], endpoint="all-minilm-l6-v2", return_type="STRUCT<a: INT>")
    assert fake_engine.model_calls == 0


def test_identical_greedy_requests_run_once(fake_engine) -> None:
    out = run(fake_engine, ["same"] * 50 + ["other"], endpoint=CHAT)
    assert fake_engine.model_calls == 2
    assert len(set(out.column("result").to_pylist()[:50])) == 1


def test_sampling_requests_are_not_coalesced(fake_engine) -> None:
    run(fake_engine, ["same"] * 5, endpoint=CHAT, model_parameters=ModelParameters(temperature=0.8))
    assert fake_engine.model_calls == 5


@pytest.mark.parametrize("endpoint", ["smollm2-135m-instruct", "all-minilm-l6-v2"])
def test_a_model_that_cannot_be_made_fails_the_batch_at_once(endpoint: str) -> None:
    from ai_query.catalog import Catalog
    from ai_query.engine.local import LocalEngine
    from ai_query.errors import ModelNotAvailableError

    def no_model(entity):  # type: ignore[no-untyped-def]
        raise ModelNotAvailableError(f"model {entity.entity_name!r} is not here")

    no_model.__qualname__ = f"no_model-{endpoint}"  # the registry keys backends by factory name
    engine = LocalEngine(Catalog.default(), backend_factory=no_model)
    batch = request_batch(["a", "b", "a"], CallOptions(endpoint=endpoint))
    done: list[BaseException] = []
    worker = threading.Thread(target=lambda: _run_catching(engine, batch, done), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the batch hung on a model that cannot be made"
    assert isinstance(done[0], ModelNotAvailableError) and "is not here" in str(done[0])


def _run_catching(engine, batch, done):  # type: ignore[no-untyped-def]
    try:
        engine.run(batch)
    except BaseException as exc:
        done.append(exc)
