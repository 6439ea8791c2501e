"""The result cache as a wrapper engine: keys, hits, typed round trips, row order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ai_query.catalog import Catalog
from ai_query.engine.core.batch import align_results, request_batch
from ai_query.jobs.cache import CachingEngine, ResultCache, call_identity, request_key
from ai_query.options import CallOptions, ModelParameters

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


def _opts(endpoint: str = CHAT, **kw: object) -> CallOptions:
    params = ModelParameters.from_value(kw.pop("params", None))
    return CallOptions(endpoint=endpoint, model_parameters=params, **kw)  # type: ignore[arg-type]


@pytest.fixture
def caching(tmp_path: Path, det_engine: Any):
    cache = ResultCache(tmp_path / "cache.sqlite")
    yield CachingEngine(det_engine, cache)
    cache.close()


def test_second_batch_is_answered_without_the_model(caching: Any, det_engine: Any) -> None:
    requests = ["a", "b", None, "a", "c"]
    first = caching.run(request_batch(requests, _opts()))
    calls = det_engine.model_calls
    second = caching.run(request_batch(requests, _opts()))
    assert det_engine.model_calls == calls == 3  # a, b, c: the repeat of "a" is coalesced
    assert caching.hits == 4 and caching.misses == 4
    assert second.column("result").to_pylist() == first.column("result").to_pylist()
    assert second.column("result")[2].as_py() is None
    assert second.column("prompt_tokens").to_pylist() == [0] * 5  # nothing paid for hits
    assert first.column("cached").to_pylist() == [False] * 5
    assert second.column("cached").to_pylist() == [True, True, False, True, True]


def test_mixed_hits_and_misses_keep_row_order(caching: Any) -> None:
    caching.run(request_batch(["x1", "x3"], _opts()))
    requests = ["x0", "x1", None, "x3", "x4", "x1"]
    result = align_results(caching.run(request_batch(requests, _opts())), len(requests))
    assert result.column("row").to_pylist() == list(range(6))
    expected = [None if r is None else f"{CHAT} says: {r}" for r in requests]
    assert result.column("result").to_pylist() == expected
    assert caching.hits == 3 and caching.misses == 4  # x1, x3, x1 hit now; x0, x4 miss


def test_alias_shares_entries_with_its_target(caching: Any, det_engine: Any) -> None:
    caching.run(request_batch(["same"], _opts(CHAT)))
    calls = det_engine.model_calls
    caching.run(request_batch(["same"], _opts("databricks-meta-llama-3-3-70b-instruct")))
    assert det_engine.model_calls == calls and caching.hits == 1


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(_opts(params={"max_tokens": 3}), id="parameters"),
        pytest.param(_opts(return_type="STRUCT<a: INT>"), id="returnType"),
        pytest.param(_opts(response_format="json_object"), id="responseFormat"),
    ],
)
def test_different_call_options_are_different_entries(caching: Any, other: CallOptions) -> None:
    caching.run(request_batch(["q"], _opts()))
    caching.run(request_batch(["q"], other))
    assert caching.hits == 0 and caching.misses == 2


def test_fail_on_error_does_not_split_entries() -> None:
    ep = Catalog.default().get(CHAT)
    assert call_identity(ep, _opts(fail_on_error=False)) == call_identity(ep, _opts())
    assert request_key(call_identity(ep, _opts()), ("a", None)) != request_key(
        call_identity(ep, _opts()), ("b", None)
    )


def test_sampling_calls_bypass_the_cache(caching: Any, det_engine: Any) -> None:
    opts = _opts(params={"temperature": 0.7})
    caching.run(request_batch(["s", "s"], opts))
    caching.run(request_batch(["s"], opts))
    assert caching.bypassed == 3 and caching.hits == 0 and len(caching.cache) == 0


def test_failed_rows_are_not_cached(caching: Any, det_engine: Any) -> None:
    long = "word " * 600  # over the deterministic backend's 512-token context
    opts = _opts(fail_on_error=False)
    first = caching.run(request_batch([long, "ok"], opts))
    assert first.column("error")[0].as_py() and first.column("error")[1].as_py() is None
    second = caching.run(request_batch([long, "ok"], opts))
    assert caching.hits == 1 and "maximum context length" in second.column("error")[0].as_py()


def test_typed_results_round_trip(caching: Any) -> None:
    ddl = (
        "STRUCT<label: STRING, score: DOUBLE, day: DATE, tags: ARRAY<STRING>, m: MAP<STRING, INT>>"
    )
    for opts in (_opts(return_type=ddl), _opts(EMBED), _opts(EMBED, return_type="ARRAY<DOUBLE>")):
        first = caching.run(request_batch(["t1", "t2", None], opts))
        second = caching.run(request_batch([None, "t2", "t1", "t3"], opts))
        assert second.schema == first.schema
        got, want = second.column("result").to_pylist(), first.column("result").to_pylist()
        assert got[1:3] == [want[1], want[0]] and got[0] is None and got[3] is not None
    vectors = caching.run(request_batch(["t1"], _opts(EMBED))).column("result")
    assert vectors.type == pa.list_(pa.float32())
    assert np.linalg.norm(np.asarray(vectors[0].as_py())) == pytest.approx(1.0, abs=1e-5)


def test_cache_persists_across_processes_worth_of_objects(tmp_path: Path, det_engine: Any) -> None:
    first = CachingEngine(det_engine, ResultCache(tmp_path / "c.sqlite"))
    first.run(request_batch(["keep"], _opts()))
    first.cache.close()
    again = CachingEngine(det_engine, ResultCache(tmp_path / "c.sqlite"))
    again.run(request_batch(["keep"], _opts()))
    assert again.hits == 1 and again.misses == 0
    again.cache.close()


def test_unknown_endpoint_fails_like_the_engine(caching: Any) -> None:
    from ai_query.errors import UnknownEndpointError

    with pytest.raises(UnknownEndpointError):
        caching.run(request_batch(["x"], _opts("nope")))


def test_preview_marks_the_rows_the_cache_would_answer(caching: Any, det_engine: Any) -> None:
    from ai_query.engine.core.preview import preview

    caching.run(request_batch(["a b", "c"], _opts()))
    seen = preview(caching, request_batch(["a b", "d e f", None, "c"], _opts())).to_pydict()
    assert seen["cached"][:2] == [True, False] and seen["cached"][3] is True
    assert seen["prompt_tokens"][:2] == [2, 3]  # counted either way
    sampled = preview(caching, request_batch(["a b"], _opts(params={"temperature": 0.9})))
    assert sampled.column("cached").to_pylist() == [False]  # sampling calls are never cached
    assert det_engine.model_calls == 2
