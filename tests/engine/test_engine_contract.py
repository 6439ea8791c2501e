"""One contract every :class:`~ai_query.engine.core.protocol.Engine` passes, as httpx runs one
suite over its transports.

The engines, all answering with the deterministic backend somewhere:

* ``in-process``: :class:`~ai_query.engine.local.LocalEngine` in this process;
* ``flight``: :class:`~ai_query.engine.flight.client.FlightEngineClient` over two Flight
  servers in this process (small chunks, so batches are split and spread);
* ``private-server``: :class:`~ai_query.engine.process.embedded.EmbeddedEngine`, a private
  ``ai-query serve --engine deterministic`` started through the launcher (what DuckDB uses);
* ``external``: a LocalEngine whose endpoints are external models, served over the
  OpenAI-compatible API by another ``ai-query serve --engine deterministic``.

The in-process engine's answers are the reference. The two engines in a subprocess are slow.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from ai_query.catalog import Catalog
from ai_query.engine.backends.deterministic import DeterministicBackend
from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.core.protocol import Engine
from ai_query.engine.flight.client import FlightEngineClient
from ai_query.engine.local import LocalEngine
from ai_query.errors import UnknownEndpointError
from ai_query.options import CallOptions, ModelParameters
from ai_query.serving.flight import ServingFlightServer

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
#: A prompt over the deterministic backend's context (512 words): that row's error.
TOO_LONG = "word " * 600

ENGINES = [
    pytest.param("in-process", id="in-process"),
    pytest.param("flight", id="flight"),
    pytest.param("private-server", id="private-server", marks=pytest.mark.slow),
    pytest.param("external", id="external", marks=pytest.mark.slow),
]


def _reference() -> LocalEngine:
    return LocalEngine(Catalog.default(), backend_factory=DeterministicBackend)


@pytest.fixture(scope="module")
def flight_servers() -> Iterator[list[ServingFlightServer]]:
    servers = [ServingFlightServer(_reference()) for _ in range(2)]
    yield servers
    for server in servers:
        server.shutdown()


@pytest.fixture(scope="module")
def private_server_engine() -> Iterator[Engine]:
    from ai_query.engine.process.embedded import EmbeddedEngine

    engine = EmbeddedEngine(Catalog.default(), engine_kind="deterministic", startup_timeout=120)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def external_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    from tests.serving.http_servers import HTTPServer

    provider = HTTPServer(tmp_path_factory.mktemp("provider"), "--engine", "deterministic")
    provider.start()

    def external(name: str, task: str) -> dict[str, object]:
        model = {"name": name, "provider": "openai-compatible", "task": task, "openai_config": {
            "openai_api_base": f"{provider.url}/v1", "openai_api_key_plaintext": "unused"}}
        return {"name": name, "config": {"served_entities": [{"external_model": model}]}}

    engine = LocalEngine(Catalog.from_data(
        [external(CHAT, "llm/v1/chat"), external(EMBED, "llm/v1/embeddings")]))
    try:
        yield engine
    finally:
        engine.close()
        provider.stop()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    kind = request.param
    if kind == "in-process":
        yield _reference()
    elif kind == "flight":
        servers = request.getfixturevalue("flight_servers")
        client = FlightEngineClient([s.url for s in servers], chunk_rows=7)
        yield client
        client.close()
    else:
        yield request.getfixturevalue(f"{kind.replace('-', '_')}_engine")


def run(engine: Engine, requests: list[str | None], **opts: object) -> pa.RecordBatch:
    batch = request_batch(requests, CallOptions(**opts))  # type: ignore[arg-type]
    return align_results(engine.run(batch), len(requests))


def test_output_row_i_is_input_row_i(engine: Engine) -> None:
    requests = [f"r{i}" for i in range(95)]
    out = engine.run(request_batch(requests, CallOptions(endpoint=CHAT)))
    assert out.column("row").to_pylist() == list(range(95))  # in order, as the protocol says
    assert [r.split()[-1] for r in out.column("result").to_pylist()] == requests


def test_null_and_empty_rows_keep_their_places(engine: Engine) -> None:
    out = run(engine, ["a", None, "", None, "b"], endpoint=CHAT)
    results = out.column("result").to_pylist()
    assert results[1] is None and results[3] is None
    assert results[0].endswith("a") and results[4].endswith("b") and results[2] is not None
    assert out.column("error").to_pylist() == [None] * 5


@pytest.mark.parametrize("endpoint", [CHAT, EMBED])
def test_an_empty_batch_answers_no_rows(engine: Engine, endpoint: str) -> None:
    out = run(engine, [], endpoint=endpoint)
    assert out.num_rows == 0 and {"row", "result", "error"} <= set(out.schema.names)


@pytest.mark.parametrize("endpoint", [CHAT, EMBED])
def test_row_errors_stay_on_their_rows(engine: Engine, endpoint: str) -> None:
    out = run(engine, ["a", TOO_LONG, None, "c", TOO_LONG], endpoint=endpoint, fail_on_error=False)
    errors = out.column("error").to_pylist()
    results = out.column("result").to_pylist()
    assert [e is None for e in errors] == [True, False, True, True, False]
    assert "maximum context length" in errors[1] and "maximum context length" in errors[4]
    assert results[1] is None and results[2] is None and results[4] is None
    assert results[0] is not None and results[3] is not None
    if endpoint == CHAT:
        assert results[0].endswith("a") and results[3].endswith("c")


def test_an_unknown_endpoint_is_an_unknown_endpoint_error(engine: Engine) -> None:
    with pytest.raises(UnknownEndpointError, match="unknown endpoint 'nope'") as info:
        run(engine, ["x"], endpoint="nope")
    assert info.value.name == "nope"


def test_embeddings_are_unit_vectors_of_the_model_s_size(engine: Engine) -> None:
    out = run(engine, ["x", None, "y"], endpoint=EMBED)
    assert out.schema.field("result").type == pa.list_(pa.float32())
    vectors = out.column("result").to_pylist()
    assert vectors[1] is None
    for vector in (vectors[0], vectors[2]):
        assert len(vector) == 384 and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert vectors[0] != vectors[2]


def test_options_reach_the_model(engine: Engine) -> None:
    free = run(engine, ["one two three four"], endpoint=CHAT).column("result")[0].as_py()
    short = run(engine, ["one two three four"], endpoint=CHAT,
                model_parameters=ModelParameters(max_tokens=3, temperature=0.5))
    assert short.column("result")[0].as_py() == " ".join(free.split()[:3])
    typed = run(engine, ["a", "b"], endpoint=CHAT, return_type="STRUCT<label: STRING, n: INT>")
    assert typed.schema.field("result").type == pa.struct(
        [("label", pa.string()), ("n", pa.int32())])
    assert all(isinstance(row["n"], int) for row in typed.column("result").to_pylist())


@pytest.mark.parametrize(
    "opts",
    [
        pytest.param({"endpoint": CHAT}, id="text"),
        pytest.param({"endpoint": CHAT, "return_type": "STRUCT<label: STRING, n: INT>"},
                     id="struct"),
        pytest.param({"endpoint": CHAT, "fail_on_error": False,
                      "model_parameters": ModelParameters(max_tokens=3)}, id="params"),
        pytest.param({"endpoint": EMBED}, id="embeddings"),
    ],
)
def test_answers_are_the_in_process_engine_s(engine: Engine, opts: dict[str, object]) -> None:
    requests = ["alpha", None, "beta", "", TOO_LONG]
    got = run(engine, requests, **opts)
    want = run(_reference(), requests, **opts)
    assert got.schema == want.schema
    for name in want.schema.names:
        if name not in ("error", "cached"):  # cached: what each engine remembers already
            assert got.column(name).equals(want.column(name)), name
    # The same rows fail for the same reason; an external model's errors also name the model.
    for error, reference in zip(got.column("error").to_pylist(), want.column("error").to_pylist()):
        assert (error is None) == (reference is None)
        assert reference is None or reference in error


def test_concurrent_callers_get_their_own_rows(engine: Engine) -> None:
    results: dict[int, list[str]] = {}

    def caller(k: int) -> None:
        out = run(engine, [f"t{k}-{i}" for i in range(60)], endpoint=CHAT)
        results[k] = out.column("result").to_pylist()

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(8):
        assert [r.split()[-1] for r in results[k]] == [f"t{k}-{i}" for i in range(60)]


def test_the_catalog_is_exposed(engine: Engine) -> None:
    assert isinstance(engine, Engine)
    assert {CHAT, EMBED} <= set(engine.catalog.names())
    assert engine.catalog.task_of(CHAT) == "llm/v1/chat"
    assert engine.catalog.task_of(EMBED) == "llm/v1/embeddings"

