"""Engine previews: prompt tokens and cache hits of a request batch, with no model call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ai_query.catalog import Catalog
from ai_query.engine.backends.deterministic import DeterministicBackend
from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.core.preview import cache_only, estimate_tokens, preview
from ai_query.engine.flight.client import FlightEngineClient
from ai_query.engine.local import LocalEngine
from ai_query.errors import ConfigError, UnknownEndpointError
from ai_query.options import CallOptions, ModelParameters
from ai_query.serving.flight import ServingFlightServer
from ai_query.testing import EchoEngine

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
TEXTS = ["one two three", None, "four five", "one two three"]


def _engine() -> LocalEngine:
    return LocalEngine(Catalog.default(), backend_factory=DeterministicBackend)


@pytest.fixture
def server() -> Iterator[ServingFlightServer]:
    srv = ServingFlightServer(_engine())
    yield srv
    srv.shutdown()


def test_local_preview_counts_each_row_and_calls_no_model() -> None:
    engine = _engine()
    out = preview(engine, request_batch(TEXTS, CallOptions(endpoint=CHAT))).to_pydict()
    assert out["prompt_tokens"] == [3, None, 2, 3]
    assert out["exact"] == [True] * 4 and out["cached"] == [False] * 4
    assert engine.model_calls == 0


def test_rows_the_memo_holds_are_cached_and_cache_only_counts_nothing() -> None:
    engine = _engine()
    batch = request_batch(TEXTS, CallOptions(endpoint=CHAT))
    engine.run(request_batch(["four five"], CallOptions(endpoint=CHAT)))
    assert preview(engine, batch).column("cached").to_pylist() == [False, False, True, False]
    only = preview(engine, cache_only(batch)).to_pydict()
    assert only["prompt_tokens"] == [None] * 4 and only["cached"] == [False, False, True, False]
    # sampling calls are never answered from the memo
    sampled = request_batch(TEXTS, CallOptions(endpoint=CHAT, model_parameters=ModelParameters(temperature=1)))
    assert not any(preview(engine, sampled).column("cached").to_pylist())


def test_answers_from_the_memo_come_back_cached_with_the_tokens_they_took(server) -> None:
    client = FlightEngineClient(server.url)
    batch = request_batch(TEXTS, CallOptions(endpoint=CHAT))
    first = align_results(client.run(batch), 4)
    assert first.column("cached").to_pylist() == [False] * 4  # the repeat is coalesced
    again = align_results(client.run(batch), 4)
    assert again.column("cached").to_pylist() == [True, False, True, True]  # NULL: not
    assert again.column("prompt_tokens").equals(first.column("prompt_tokens"))
    assert again.column("result").equals(first.column("result"))
    sampled = request_batch(TEXTS, CallOptions(
        endpoint=CHAT, model_parameters=ModelParameters(temperature=1)))
    assert not any(align_results(client.run(sampled), 4).column("cached").to_pylist())
    client.close()


def test_an_engine_without_a_preview_gets_the_estimate_and_checks_the_endpoint() -> None:
    engine = EchoEngine()
    out = preview(engine, request_batch(["x" * 40, None], CallOptions(endpoint=CHAT)))
    assert out.column("prompt_tokens").to_pylist() == [estimate_tokens("x" * 40), None]
    assert estimate_tokens("x" * 40) == 18
    assert out.column("exact").to_pylist() == [False, False]
    with pytest.raises(UnknownEndpointError):
        preview(engine, request_batch(["a"], CallOptions(endpoint="nope")))


def test_preview_over_flight_is_the_servers_own_and_counts_no_rows(server) -> None:
    client = FlightEngineClient(server.url)
    batch = request_batch(TEXTS, CallOptions(endpoint=EMBED))
    out = client.preview(batch)
    assert out.to_pydict() == preview(server.engine, batch).to_pydict()
    assert out.column("prompt_tokens").to_pylist() == [3, None, 2, 3]
    assert server.health()["rows"] == 0 and server.engine.model_calls == 0
    with pytest.raises(UnknownEndpointError):
        client.preview(request_batch(["a"], CallOptions(endpoint="nope")))
    # and the data path still answers on the same server
    answered = align_results(client.run(batch), 4)
    assert answered.column("error").null_count == 4


def test_an_endpoint_price_is_part_of_the_catalog() -> None:
    data = {"endpoints": [{
        "name": "ext", "price": {"input_per_million": 0.15, "output_per_million": 0.6},
        "config": {"served_entities": [{"entity_name": CHAT}]},
    }]}
    price = Catalog.from_data(data).get("ext").price
    assert price is not None and price.cost(1_000_000, 500_000) == pytest.approx(0.45)
    assert price.currency == "USD"
    bad = {"endpoints": [{"name": "ext", "price": {"input_per_million": -1},
                          "config": {"served_entities": [{"entity_name": CHAT}]}}]}
    with pytest.raises(ConfigError):
        Catalog.from_data(bad)
