from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from ai_query.catalog import Catalog
from ai_query.errors import ConfigError, UnknownEndpointError
from ai_query.secrets import resolve_secret

SPEC_EXAMPLE = {
    "name": "my-chat",
    "config": {
        "served_entities": [
            {"name": "smollm2", "entity_name": "smollm2-135m-instruct", "task": "llm/v1/chat"}
        ],
        "traffic_config": {"routes": [{"served_model_name": "smollm2", "traffic_percentage": 100}]},
    },
    "rate_limits": [{"calls": 100, "key": "user", "renewal_period": "minute"}],
    "tags": [{"key": "team", "value": "gen-ai"}],
}


def test_default_catalog_has_bundled_endpoints_and_databricks_aliases() -> None:
    cat = Catalog.default()
    assert cat.task_of("smollm2-135m-instruct") == "llm/v1/chat"
    assert cat.task_of("all-minilm-l6-v2") == "llm/v1/embeddings"
    assert cat.get("databricks-meta-llama-3-3-70b-instruct").name == "smollm2-135m-instruct"
    assert cat.get("databricks-gte-large-en").name == "all-minilm-l6-v2"
    assert cat.task_of("databricks-bge-large-en") == "llm/v1/embeddings"


def test_unknown_endpoint_lists_known_names() -> None:
    with pytest.raises(UnknownEndpointError, match="known endpoints: all-minilm-l6-v2"):
        Catalog.default().get("gpt-5")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_load_spec_example(tmp_path: Path, suffix: str) -> None:
    import yaml

    path = tmp_path / f"catalog{suffix}"
    data = {"endpoints": [SPEC_EXAMPLE], "aliases": {"chat": "my-chat"}}
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    cat = Catalog.load(path)
    assert cat.get("chat").config.served_entities[0].served_name == "smollm2"
    assert cat.get("my-chat").rate_limits[0].calls == 100
    assert Catalog.from_data(cat.to_data()).names() == cat.names()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"name": ""}, r"endpoints\[0\]\.name", id="empty-name"),
        pytest.param({"config": {"served_entities": []}}, r"served_entities", id="no-entities"),
        pytest.param(
            {"config": {"served_entities": [{"entity_name": "x", "task": "llm/v1/chatt"}]}},
            r"served_entities\[0\]\.task",
            id="bad-task",
        ),
        pytest.param(
            {
                "config": {
                    "served_entities": [{"entity_name": "a"}],
                    "traffic_config": {
                        "routes": [{"served_model_name": "a", "traffic_percentage": 60}]
                    },
                }
            },
            "add up to 100",
            id="traffic-sum",
        ),
        pytest.param(
            {"rate_limits": [{"calls": 1, "key": "team"}]}, r"rate_limits\[0\]\.key", id="bad-key"
        ),
        pytest.param({"colour": "red"}, r"endpoints\[0\]\.colour", id="unknown-field"),
        pytest.param(
            {
                "config": {
                    "served_entities": [
                        {"external_model": {"name": "m", "task": "llm/v1/chat"}},
                        {"entity_name": "a"},
                    ]
                }
            },
            "exactly one served entity",
            id="external-alone",
        ),
    ],
)
def test_validation_names_the_field(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Catalog.from_data([{**SPEC_EXAMPLE, **change}])


def test_alias_to_unknown_endpoint_is_an_error() -> None:
    with pytest.raises(ConfigError, match="alias 'x' points at unknown endpoint"):
        Catalog.from_data({"endpoints": [SPEC_EXAMPLE], "aliases": {"x": "nope"}})


def test_traffic_split_follows_percentages() -> None:
    ep = Catalog.from_data(
        [
            {
                "name": "ab",
                "config": {
                    "served_entities": [
                        {"name": "a", "entity_name": "a"},
                        {"name": "b", "entity_name": "b"},
                    ],
                    "traffic_config": {
                        "routes": [
                            {"served_model_name": "a", "traffic_percentage": 80},
                            {"served_model_name": "b", "traffic_percentage": 20},
                        ]
                    },
                },
            }
        ]
    ).get("ab")
    rng = random.Random(7)
    counts = Counter(ep.choose_entity(rng).served_name for _ in range(2000))
    assert abs(counts["a"] / 2000 - 0.8) < 0.04


def test_secrets_resolve_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_QUERY_SECRET_MY_SCOPE_KEY", "sk-env")
    assert resolve_secret("{{secrets/my-scope/key}}") == "sk-env"
    secrets = tmp_path / "s.json"
    secrets.write_text(json.dumps({"other": {"k": "sk-file"}}))
    assert resolve_secret("{{ secrets/other/k }}", secrets) == "sk-file"
    assert resolve_secret("plain") == "plain"
    with pytest.raises(ConfigError) as info:
        resolve_secret("{{secrets/other/missing}}", secrets)
    assert "sk-file" not in str(info.value)
    assert "AI_QUERY_SECRET_OTHER_MISSING" in str(info.value)
