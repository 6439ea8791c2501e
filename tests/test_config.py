"""Settings from the environment, and the one parser of engine server addresses."""

from __future__ import annotations

import pytest

from ai_query.config import parse_engine_urls, settings
from ai_query.errors import ConfigError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(None, (), id="none"),
        pytest.param("", (), id="empty"),
        pytest.param(" , ", (), id="only-commas"),
        pytest.param("grpc://h:1", ("grpc://h:1",), id="one"),
        pytest.param(" grpc://a:1, grpc://b:2 ,", ("grpc://a:1", "grpc://b:2"), id="comma-list"),
        pytest.param(["grpc://a:1", " grpc://b:2", ""], ("grpc://a:1", "grpc://b:2"), id="list"),
        pytest.param(("grpc+tcp://a:1", "grpc+tls://b:443"), ("grpc+tcp://a:1", "grpc+tls://b:443"),
                     id="schemes"),
    ],
)
def test_engine_urls_accepted(given, expected) -> None:
    assert parse_engine_urls(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        pytest.param("http://h:1", id="scheme"),
        pytest.param("h:1", id="no-scheme"),
        pytest.param(["grpc://hostonly"], id="no-port"),
        pytest.param("grpc://a:1,b:2", id="second-bad"),
    ],
)
def test_engine_urls_refused(given) -> None:
    with pytest.raises(ConfigError, match="is not grpc://host:port"):
        parse_engine_urls(given)


def test_engine_urls_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("AI_QUERY_ENGINE_URL", "grpc://a:1, grpc://b:2")
    assert settings().engine_urls == ("grpc://a:1", "grpc://b:2")


def test_a_malformed_variable_fails_only_where_engine_servers_are_used(monkeypatch) -> None:
    monkeypatch.setenv("AI_QUERY_ENGINE_URL", "nonsense")
    env = settings()  # reading the other settings still works
    with pytest.raises(ConfigError, match="'nonsense' is not grpc://host:port"):
        _ = env.engine_urls
