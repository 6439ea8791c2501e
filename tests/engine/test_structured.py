"""Structured output for small models: the schema bounded, told in words, failures explained."""

from __future__ import annotations

import json

import pytest

from ai_query.engine.backends.backend import GenerationRequest
from ai_query.engine.backends.structured import (
    CHARS_PER_TOKEN,
    DEFAULT_MAX_ITEMS,
    MIN_STRING_CHARS,
    SYNTAX_SHARE,
    bounded_schema,
    describe_schema,
    explain_unparsed,
)
from ai_query.engine.local import LocalEngine
from ai_query.options import CallOptions, ModelParameters
from ai_query.sql.response_format import resolve_output
from ai_query.tasks import Task

PAPER = (
    "STRUCT<research_paper_extraction: STRUCT<title: STRING, authors: ARRAY<STRING>, "
    "abstract: STRING, keywords: ARRAY<STRING>>>"
)


def paper_schema() -> dict:
    schema = resolve_output(PAPER, None, Task.CHAT).json_schema
    assert schema is not None
    return schema


def test_every_string_and_array_is_bounded_to_fit_the_budget() -> None:
    bounded = bounded_schema(paper_schema(), 512)
    inner = bounded["properties"]["research_paper_extraction"]["properties"]
    budget = int(512 * (1 - SYNTAX_SHARE)) * CHARS_PER_TOKEN
    assert inner["title"]["maxLength"] == inner["abstract"]["maxLength"] == budget // 4
    assert inner["authors"]["maxItems"] == DEFAULT_MAX_ITEMS
    assert inner["authors"]["items"]["maxLength"] == max(
        MIN_STRING_CHARS, budget // 4 // DEFAULT_MAX_ITEMS
    )
    assert inner["keywords"]["items"]["maxLength"] >= MIN_STRING_CHARS


def test_the_users_own_limits_win_and_the_input_is_not_changed() -> None:
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "label": {"type": "string", "enum": ["a", "b"]},
            "name": {"type": "string", "maxLength": 5},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
            "scores": {"type": "object", "additionalProperties": {"type": "string"}},
            "n": {"type": "integer"},
        },
    }
    bounded = bounded_schema(schema, 256)
    props = bounded["properties"]
    assert props["code"] == schema["properties"]["code"]  # a pattern already shapes it
    assert props["label"] == schema["properties"]["label"]
    assert props["name"]["maxLength"] == 5
    assert props["tags"]["maxItems"] == 2 and props["tags"]["items"]["maxLength"] == 3
    assert props["scores"]["additionalProperties"]["maxLength"] >= MIN_STRING_CHARS
    assert props["n"] == {"type": "integer"}
    assert "maxLength" not in schema["properties"]["scores"]["additionalProperties"]


def test_a_tiny_budget_still_leaves_every_string_room() -> None:
    bounded = bounded_schema(paper_schema(), 1)
    inner = bounded["properties"]["research_paper_extraction"]["properties"]
    assert inner["authors"]["items"]["maxLength"] == MIN_STRING_CHARS


def test_the_model_is_told_field_names_types_and_meanings() -> None:
    schema = paper_schema()
    schema["properties"]["research_paper_extraction"]["properties"]["abstract"]["description"] = (
        "the paper's summary"
    )
    text = describe_schema(schema)
    assert text.splitlines() == [
        "Answer with one JSON object and nothing else. Fill every field from the text:",
        "- research_paper_extraction: an object with these fields:",
        "  - title: a string",
        "  - authors: a list of strings",
        "  - abstract: a string (the paper's summary)",
        "  - keywords: a list of strings",
    ]
    enum = {"type": "object", "properties": {"mood": {"type": "string", "enum": ["up", "down"]}}}
    assert '- mood: one of "up", "down"' in describe_schema(enum)


def test_sql_calls_carry_the_instruction_as_a_system_turn() -> None:
    request = GenerationRequest(
        task=Task.CHAT, params=ModelParameters(), json_schema=paper_schema(), schema_hint=True
    )
    system, user = request.conversation("Attention is all you need")
    assert system["role"] == "system" and "- authors: a list of strings" in system["content"]
    assert user == {"role": "user", "content": "Attention is all you need"}


@pytest.mark.parametrize(
    ("text", "finish", "expected"),
    [
        pytest.param(
            '{"label": "Great product, works',
            "length",
            "stopped at max_tokens inside a string for field `label`",
            id="open-string",
        ),
        pytest.param(
            '{"p": {"title": "T", "authors": ["A", "B',
            "length",
            "stopped at max_tokens inside a string for field `authors`",
            id="nested-array",
        ),
        pytest.param('{"p": {"tit', "length", "inside a field name", id="key"),
        pytest.param('{"a": 1} x', "stop", "is not valid JSON", id="debris"),
    ],
)
def test_an_unparsed_answer_says_why_in_one_line(text: str, finish: str, expected: str) -> None:
    why = explain_unparsed(text, finish, "Unterminated string")
    assert expected in why and "\n" not in why


def test_the_row_error_names_the_field_and_keeps_the_standard_prefix(fake_engine) -> None:
    from ai_query.engine.backends.backend import Completion
    from ai_query.engine.local import _parse_structured

    engine: LocalEngine = fake_engine
    plan = engine.plan(
        CallOptions(endpoint="databricks-meta-llama-3-3-70b-instruct", return_type=PAPER)
    )
    cut = '{"research_paper_extraction": {"title": "T", "abstract": "We'
    value, error = _parse_structured(Completion(cut, 10, 20, finish_reason="length"), plan)
    assert value is None and error is not None and "\n" not in error
    assert error.startswith("could not parse the model's answer as STRUCT<research_paper_")
    assert "stopped at max_tokens inside a string for field `abstract`" in error


def test_a_fields_confidence_is_the_probability_of_its_value_tokens() -> None:
    import math

    from ai_query.engine.backends.field_confidence import field_confidences, value_spans

    text = '{"person":"Jo Ann","n":3,"tags":["a"]}'
    assert value_spans(text) == {"person": (10, 18), "n": (23, 24), "tags": (32, 37)}
    tokens = [
        ("{", -0.5), ('"', 0.0), ("person", -0.1), ('":', -0.1), ('"', -0.2), ("Jo", -0.3),
        (" Ann", -0.4), ('",', -0.5), ('"n":', -0.1), ("3", -1.0), (',"tags":', 0.0),
        ('["a"]', -0.7), ("}", 0.0), ("<|im_end|>", 0.0),
    ]  # fmt: skip
    found = field_confidences(text, ["person", "n", "tags", "missing"], tokens)
    # The opening quote, the words, and the token that closes the string (with its comma).
    assert found["person"] == pytest.approx(math.exp(-(0.2 + 0.3 + 0.4 + 0.5)))
    assert found["n"] == pytest.approx(math.exp(-1.0))
    assert found["tags"] == pytest.approx(math.exp(-0.7))
    assert found["missing"] is None
    # No probabilities, or tokens that spell another text: no confidence, never a wrong one.
    assert field_confidences(text, ["n"], None) == {"n": None}
    assert field_confidences(text, ["n"], [("{}", 0.0)]) == {"n": None}
    assert value_spans("not json") == {} and value_spans('{"a":1,"b":') == {"a": (5, 6)}


def test_confidence_needs_a_typed_struct_response_format() -> None:
    from ai_query.errors import ConfigError
    from ai_query.sql.response_format import parse_response_format

    schema = {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
    with pytest.raises(ConfigError, match="'confidence' needs a 'returnType' STRUCT"):
        parse_response_format(
            json.dumps({"type": "json_schema", "json_schema": schema, "confidence": True})
        )
