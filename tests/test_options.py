from __future__ import annotations

import pytest

from ai_query.errors import ConfigError
from ai_query.options import CallOptions, ModelParameters


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, ModelParameters(), id="none"),
        pytest.param(
            {"max_tokens": 100, "temperature": 0.7},
            ModelParameters(max_tokens=100, temperature=0.7),
            id="dict",
        ),
        pytest.param('{"MAX_TOKENS": 5}', ModelParameters(max_tokens=5), id="json-case"),
        pytest.param({"max_tokens": 64.0}, ModelParameters(max_tokens=64), id="whole-float"),
        pytest.param({"stop": "END"}, ModelParameters(stop=("END",)), id="stop-str"),
        pytest.param(
            {"stop": ["a", "b"], "seed": 3},
            ModelParameters(stop=("a", "b"), seed=3),
            id="stop-list",
        ),
        pytest.param({"top_k": None}, ModelParameters(), id="null-ignored"),
        pytest.param(
            {"repetition_penalty": 1}, ModelParameters(repetition_penalty=1.0), id="repetition"
        ),
        pytest.param(
            {"reasoning_effort": "low"}, ModelParameters(reasoning_effort="low"), id="reasoning"
        ),
    ],
)
def test_model_parameters_accepts(raw: object, expected: ModelParameters) -> None:
    assert ModelParameters.from_value(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"max_token": 5}, "unknown modelParameters key 'max_token'", id="unknown"),
        pytest.param({"max_tokens": 0}, "max_tokens must be >= 1", id="range"),
        pytest.param({"temperature": "hot"}, "temperature must be", id="type"),
        pytest.param({"top_p": 1.5}, "top_p must be in", id="top_p"),
        pytest.param({"repetition_penalty": 0}, "repetition_penalty must be in", id="repetition"),
        pytest.param({"max_tokens": True}, "max_tokens must be int", id="bool"),
        pytest.param(
            {"reasoning_effort": "extreme"},
            "reasoning_effort must be one of minimal, low, medium, high, got 'extreme'",
            id="reasoning",
        ),
        pytest.param("[1]", "must be a struct", id="not-object"),
    ],
)
def test_model_parameters_rejects(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelParameters.from_value(raw)


def test_call_options_round_trip() -> None:
    opts = CallOptions(
        endpoint="e",
        model_parameters=ModelParameters(max_tokens=3, stop=("x",)),
        return_type="STRUCT<a: INT>",
        fail_on_error=False,
    )
    assert CallOptions.from_json(opts.to_json()) == opts
