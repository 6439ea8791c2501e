"""Tests of responseFormat parsing and output resolution (ai_query.sql.response_format)."""

from __future__ import annotations

import json

import pytest

from ai_query.errors import ConfigError, SQLParseError
from ai_query.sql import (
    SQLType,
    embedding_type,
    parse_response_format,
    parse_return_type,
    resolve_output,
)
from ai_query.sql.response_format import schema_depth
from ai_query.sql.types import MAX_TYPE_DEPTH

CHAT = "llm/v1/chat"
COMPLETIONS = "llm/v1/completions"
EMBEDDINGS = "llm/v1/embeddings"
PAPER_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
}
OPENAI_SCHEMA = json.dumps(
    {
        "type": "json_schema",
        "json_schema": {"name": "paper", "schema": PAPER_SCHEMA, "strict": True},
    }
)
LABEL_DDL = "STRUCT<label: STRING, score: DOUBLE>"
LABEL = parse_return_type(LABEL_DDL)


@pytest.mark.parametrize(
    ("value", "kind", "name"),
    [
        pytest.param(None, "text", None, id="none"),
        pytest.param("text", "text", None, id="text"),
        pytest.param(" JSON_OBJECT ", "json_object", None, id="json-object-case"),
        pytest.param('{"type": "text"}', "text", None, id="openai-text"),
        pytest.param('{"type": "json_object"}', "json_object", None, id="openai-json-object"),
        pytest.param(OPENAI_SCHEMA, "json_schema", "paper", id="openai-json-schema"),
    ],
)
def test_parse_response_format(value: str | None, kind: str, name: str | None) -> None:
    fmt = parse_response_format(value)
    assert fmt.kind == kind
    assert fmt.name == name
    assert fmt.sql_type is None
    assert fmt.schema == (PAPER_SCHEMA if kind == "json_schema" else None)


def test_parse_response_format_ddl() -> None:
    fmt = parse_response_format("struct<label string, score double>")
    assert fmt.kind == "json_schema"
    assert fmt.sql_type == LABEL
    assert fmt.schema == LABEL.to_json_schema()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("xml", id="unknown-word"),
        pytest.param("{not json", id="broken-json"),
        pytest.param('{"type": "yaml"}', id="unknown-type"),
        pytest.param('{"type": "json_schema"}', id="schema-missing"),
        pytest.param(
            '{"type": "json_schema", "json_schema": {"schema": 3}}', id="schema-not-object"
        ),
        pytest.param("STRUCT<a: NOPE>", id="bad-ddl"),
        pytest.param("ARRAY<STRING>", id="ddl-not-struct"),
    ],
)
def test_bad_response_format(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^bad responseFormat"):
        parse_response_format(value)


@pytest.mark.parametrize(
    ("return_type", "response_format", "task", "sql_type", "schema", "json_object", "parse_json"),
    [
        pytest.param(None, None, CHAT, SQLType.string(), None, False, False, id="chat-plain"),
        pytest.param(
            None, None, COMPLETIONS, SQLType.string(), None, False, False, id="completions-plain"
        ),
        pytest.param("STRING", None, CHAT, SQLType.string(), None, False, False, id="string-rt"),
        pytest.param(
            LABEL_DDL, None, CHAT, LABEL, LABEL.to_json_schema(), False, True, id="struct-rt"
        ),
        pytest.param(
            "ARRAY<STRING>",
            None,
            CHAT,
            SQLType.array(SQLType.string()),
            {"type": "array", "items": {"type": "string"}},
            False,
            True,
            id="array-rt",
        ),
        pytest.param(
            None, LABEL_DDL, CHAT, LABEL, LABEL.to_json_schema(), False, True, id="ddl-rf"
        ),
        pytest.param(
            None, OPENAI_SCHEMA, CHAT, SQLType.string(), PAPER_SCHEMA, False, False,
            id="openai-schema-is-string",
        ),
        pytest.param(
            None, "json_object", CHAT, SQLType.string(), None, True, False, id="json-object"
        ),
        pytest.param(None, "text", CHAT, SQLType.string(), None, False, False, id="text"),
        pytest.param(None, None, EMBEDDINGS, embedding_type(), None, False, True, id="embeddings"),
        pytest.param(
            "ARRAY<FLOAT>", None, EMBEDDINGS, embedding_type(), None, False, True,
            id="embeddings-float",
        ),
        pytest.param(
            "array<double>", None, EMBEDDINGS, SQLType.array(SQLType("DOUBLE")), None, False, True,
            id="embeddings-double",
        ),
    ],
)  # fmt: skip
def test_resolve_output(
    return_type: str | None,
    response_format: str | None,
    task: str,
    sql_type: SQLType,
    schema: dict[str, object] | None,
    json_object: bool,
    parse_json: bool,
) -> None:
    out = resolve_output(return_type, response_format, task)
    assert out.sql_type == sql_type
    assert out.json_schema == schema
    assert out.json_object is json_object
    assert out.parse_json is parse_json


@pytest.mark.parametrize(
    ("return_type", "response_format", "task", "message"),
    [
        pytest.param(None, None, "llm/v1/rerank", "unknown endpoint task", id="bad-task"),
        pytest.param(LABEL_DDL, "STRUCT<x: INT>", CHAT, "not both", id="different-structs"),
        pytest.param(LABEL_DDL, LABEL_DDL, CHAT, "not both", id="same-struct-both"),
        pytest.param(LABEL_DDL, "json_object", CHAT, "not both", id="struct-and-json-object"),
        pytest.param(LABEL_DDL, "text", CHAT, "not both", id="struct-vs-text"),
        pytest.param(LABEL_DDL, OPENAI_SCHEMA, CHAT, "not both", id="struct-vs-openai"),
        pytest.param("STRING", LABEL_DDL, CHAT, "not both", id="string-vs-ddl"),
        pytest.param("STRING", None, EMBEDDINGS, "embeddings", id="embeddings-string"),
        pytest.param("ARRAY<INT>", None, EMBEDDINGS, "embeddings", id="embeddings-int-array"),
        pytest.param(None, "text", EMBEDDINGS, "responseFormat", id="embeddings-format"),
    ],
)
def test_resolve_output_errors(
    return_type: str | None, response_format: str | None, task: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_output(return_type, response_format, task)


def test_resolve_output_bad_return_type() -> None:
    with pytest.raises(SQLParseError, match="bad returnType"):
        resolve_output("STRUCT<", None, CHAT)


def _schema(depth: int) -> dict[str, object]:
    schema: dict[str, object] = {"type": "string"}
    for level in range(depth):
        if level % 2:
            schema = {"type": "array", "items": schema}
        else:
            schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def _openai(schema: object) -> str:
    return json.dumps({"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})


def test_schema_depth_counts_subschema_levels() -> None:
    assert schema_depth({"type": "string"}) == 0
    typ = SQLType.struct([("a", SQLType.array(SQLType.string()))])
    assert schema_depth(typ.to_json_schema()) == typ.depth == 2
    assert schema_depth({"anyOf": [{"type": "string"}, {"$ref": "#/$defs/x"}],
                         "$defs": {"x": _schema(3)}}) == 4
    assert schema_depth(_schema(20_000)) == 20_000  # no recursion


def test_a_json_schema_up_to_the_limit_is_accepted() -> None:
    fmt = parse_response_format(_openai(_schema(MAX_TYPE_DEPTH)))
    assert fmt.kind == "json_schema" and fmt.schema == _schema(MAX_TYPE_DEPTH)


@pytest.mark.parametrize("depth", [MAX_TYPE_DEPTH + 1, 200])
def test_a_json_schema_nested_past_the_limit_is_refused(depth: int) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_output(None, _openai(_schema(depth)), CHAT)
    assert str(info.value) == (
        f"bad responseFormat: its JSON schema nests subschemas {depth} levels deep; at most "
        f"{MAX_TYPE_DEPTH} are supported"
    )


def test_json_too_deep_for_python_to_read_is_refused() -> None:
    with pytest.raises(ConfigError, match="its JSON nests too deeply to read"):
        parse_response_format('{"type": "json_schema", "x": ' + "[" * 10**5 + "]" * 10**5 + "}")


def test_a_ddl_response_format_past_the_limit_names_response_format() -> None:
    ddl = "STRUCT<a: " * (MAX_TYPE_DEPTH + 1) + "STRING" + ">" * (MAX_TYPE_DEPTH + 1)
    with pytest.raises(ConfigError, match=rf"^bad responseFormat: .* nest {MAX_TYPE_DEPTH + 1} "):
        resolve_output(None, ddl, CHAT)
    deep_return = "ARRAY<" * 200 + "STRING" + ">" * 200
    with pytest.raises(ConfigError, match=r"^bad returnType: .* nest 200 levels deep"):
        resolve_output(deep_return, None, CHAT)
