"""The engine vocabulary (:class:`EngineKind`), the one engine factory and the loader of an
engine factory named on the command line."""

from __future__ import annotations

import pytest

from ai_query.catalog import Catalog
from ai_query.engine.kinds import SERVER_ENGINE_KINDS, EngineKind
from ai_query.engine.local import LocalEngine
from ai_query.engine.spec import EngineSpec, build_engine, in_process_engine, load_engine_factory
from ai_query.errors import ConfigError
from ai_query.serving.options import ServeOptions
from ai_query.testing import DelayedEngine, EchoEngine


@pytest.mark.parametrize(
    ("spelling", "kind"),
    [
        pytest.param("vllm", EngineKind.VLLM, id="vllm"),
        pytest.param("local", EngineKind.VLLM, id="local-the-old-name"),
        pytest.param("deterministic", EngineKind.DETERMINISTIC, id="deterministic"),
    ],
)
def test_every_server_engine_spelling_is_accepted(spelling: str, kind: EngineKind) -> None:
    assert EngineKind.parse(spelling, allowed=SERVER_ENGINE_KINDS) is kind
    assert ServeOptions(engine=spelling).engine is kind  # type: ignore[arg-type]


@pytest.mark.parametrize("spelling", ["echo", "flight", "VLLM", ""])
def test_a_server_refuses_other_engines(spelling: str) -> None:
    with pytest.raises(ConfigError, match="expected one of vllm, deterministic"):
        ServeOptions(engine=spelling)  # type: ignore[arg-type]


def test_kinds_are_their_strings() -> None:
    assert EngineKind.VLLM == "vllm" and f"{EngineKind.FLIGHT}" == "flight"
    assert EngineSpec(kind="flight") == EngineSpec(kind=EngineKind.FLIGHT)  # type: ignore[arg-type]


def test_in_process_engines() -> None:
    engine = in_process_engine(Catalog.default(), "deterministic")
    assert isinstance(engine, LocalEngine) and engine.backend_factory is not None
    assert in_process_engine(Catalog.default()).backend_factory is None  # vLLM: the default
    built = build_engine(EngineSpec(kind=EngineKind.DETERMINISTIC, private_server=False))
    assert isinstance(built, LocalEngine) and built.backend_factory is not None
    for opened in (engine, built):
        opened.close()
    with pytest.raises(ConfigError, match="unknown engine 'flight'"):
        in_process_engine(Catalog.default(), EngineKind.FLIGHT)


def test_for_urls() -> None:
    assert EngineSpec.for_urls(None, None) == EngineSpec()
    assert EngineSpec.for_urls(None, " ") == EngineSpec()
    spec = EngineSpec.for_urls(None, "grpc://a:1,grpc://b:2")
    assert spec.kind is EngineKind.FLIGHT and spec.urls == ("grpc://a:1", "grpc://b:2")
    with pytest.raises(ConfigError, match="is not grpc://host:port"):
        EngineSpec.for_urls(None, "a:1")


def test_an_engine_factory_by_name() -> None:
    catalog = Catalog.default()
    echo = load_engine_factory("ai_query.testing:echo_engine")(catalog)
    assert isinstance(echo, EchoEngine) and echo.catalog is catalog
    delayed = load_engine_factory("ai_query.testing:delayed_engine(delay=0.25)")(catalog)
    assert isinstance(delayed, DelayedEngine) and delayed.delay == 0.25
    assert isinstance(delayed.inner, LocalEngine)
    delayed.close()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        pytest.param("ai_query.testing", "is not module:callable", id="no-colon"),
        pytest.param(":echo_engine", "is not module:callable", id="no-module"),
        pytest.param("ai_query.testing:", "is not module:callable", id="no-name"),
        pytest.param("ai_query.testing:echo engine", "is not module:callable", id="syntax"),
        pytest.param("ai_query.testing:x[0]", "is not module:callable", id="not-a-name"),
        pytest.param("ai_query.no_such_module:f", "cannot import ai_query.no_such_module",
                     id="no-module-file"),
        pytest.param("ai_query.testing:nothing", "ai_query.testing has no nothing", id="no-attr"),
        pytest.param("ai_query.testing:delayed_engine(1.0)", "give arguments as name=value",
                     id="positional"),
        pytest.param("ai_query.testing:delayed_engine(delay=x)", "arguments must be literals",
                     id="not-literal"),
        pytest.param("ai_query.errors:__doc__", "is not callable", id="not-callable"),
    ],
)
def test_a_bad_engine_factory_is_named(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_engine_factory(target)
