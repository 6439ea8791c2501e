"""Tests of returnType DDL parsing and rendering (ai_query.sql.types)."""

from __future__ import annotations

import json

import pytest

from ai_query.errors import ConfigError, SQLParseError
from ai_query.sql import SQLType, embedding_type, error_struct, parse_return_type
from ai_query.sql.types import MAX_TYPE_DEPTH

STRING = SQLType.string()
INT = SQLType("INT")
DOUBLE = SQLType("DOUBLE")
LABEL_SCORE = SQLType.struct([("label", STRING), ("score", DOUBLE)])


@pytest.mark.parametrize(
    ("ddl", "expected"),
    [
        pytest.param("STRING", STRING, id="string"),
        pytest.param("string", STRING, id="lower-case"),
        pytest.param("  Varchar ", STRING, id="varchar-spaces"),
        pytest.param("VARCHAR(20)", STRING, id="varchar-length"),
        pytest.param("TEXT", STRING, id="text"),
        pytest.param("INT", INT, id="int"),
        pytest.param("integer", INT, id="integer"),
        pytest.param("LONG", SQLType("BIGINT"), id="long"),
        pytest.param("SHORT", SQLType("SMALLINT"), id="short"),
        pytest.param("BYTE", SQLType("TINYINT"), id="byte"),
        pytest.param("REAL", SQLType("FLOAT"), id="real"),
        pytest.param("DOUBLE PRECISION", DOUBLE, id="double-precision"),
        pytest.param("BOOL", SQLType("BOOLEAN"), id="bool"),
        pytest.param("DECIMAL(10,2)", SQLType.decimal(10, 2), id="decimal"),
        pytest.param("decimal", SQLType.decimal(10, 0), id="decimal-default"),
        pytest.param("DATE", SQLType("DATE"), id="date"),
        pytest.param("TIMESTAMP_NTZ", SQLType("TIMESTAMP"), id="timestamp-ntz"),
        pytest.param("BLOB", SQLType("BINARY"), id="blob"),
        pytest.param("STRUCT<label: STRING, score: DOUBLE>", LABEL_SCORE, id="struct-colon"),
        pytest.param("STRUCT<label STRING, score DOUBLE>", LABEL_SCORE, id="struct-space"),
        pytest.param("struct<label:string,score:double>", LABEL_SCORE, id="struct-compact"),
        pytest.param("label STRING, score DOUBLE", LABEL_SCORE, id="bare-schema"),
        pytest.param("STRUCT(label VARCHAR, score DOUBLE)", LABEL_SCORE, id="duckdb-struct"),
        pytest.param("ARRAY<STRING>", SQLType.array(STRING), id="array"),
        pytest.param("VARCHAR[]", SQLType.array(STRING), id="duckdb-list"),
        pytest.param("FLOAT[]", embedding_type(), id="duckdb-float-list"),
        pytest.param("INT[][]", SQLType.array(SQLType.array(INT)), id="duckdb-nested-list"),
        pytest.param(
            "ARRAY<STRUCT<a: INT>>", SQLType.array(SQLType.struct([("a", INT)])), id="array-struct"
        ),
        pytest.param("MAP<STRING, INT>", SQLType.map(STRING, INT), id="map"),
        pytest.param("MAP(VARCHAR, INTEGER)", SQLType.map(STRING, INT), id="duckdb-map"),
        pytest.param(
            "STRUCT<`my field`: STRING, `a``b`: INT>",
            SQLType.struct([("my field", STRING), ("a`b", INT)]),
            id="backquoted-fields",
        ),
        pytest.param(
            'STRUCT("my field" VARCHAR)', SQLType.struct([("my field", STRING)]), id="dq-field"
        ),
        pytest.param("STRUCT<Label: STRING>", SQLType.struct([("Label", STRING)]), id="case-kept"),
        pytest.param(
            "STRUCT<a: INT NOT NULL COMMENT 'the a'>",
            SQLType.struct([("a", INT)]),
            id="not-null-comment",
        ),
        pytest.param("string STRING", SQLType.struct([("string", STRING)]), id="field-named-type"),
        pytest.param(
            "STRUCT<tags: ARRAY<STRING>, meta: MAP<STRING, ARRAY<INT>>>",
            SQLType.struct(
                [("tags", SQLType.array(STRING)), ("meta", SQLType.map(STRING, SQLType.array(INT)))]
            ),
            id="deep-nesting",
        ),
    ],
)
def test_parse_return_type(ddl: str, expected: SQLType) -> None:
    assert parse_return_type(ddl) == expected


@pytest.mark.parametrize(
    ("ddl", "spark", "duckdb"),
    [
        pytest.param("string", "STRING", "VARCHAR", id="string"),
        pytest.param("integer", "INT", "INTEGER", id="int"),
        pytest.param("binary", "BINARY", "BLOB", id="binary"),
        pytest.param("DECIMAL(12, 3)", "DECIMAL(12, 3)", "DECIMAL(12, 3)", id="decimal"),
        pytest.param(
            "STRUCT<label STRING, score DOUBLE>",
            "STRUCT<label: STRING, score: DOUBLE>",
            "STRUCT(label VARCHAR, score DOUBLE)",
            id="struct",
        ),
        pytest.param("ARRAY<FLOAT>", "ARRAY<FLOAT>", "FLOAT[]", id="float-array"),
        pytest.param(
            "ARRAY<STRUCT<a: INT>>",
            "ARRAY<STRUCT<a: INT>>",
            "STRUCT(a INTEGER)[]",
            id="array-struct",
        ),
        pytest.param("MAP<STRING, INT>", "MAP<STRING, INT>", "MAP(VARCHAR, INTEGER)", id="map"),
        pytest.param(
            "STRUCT<`my field`: STRING, `order`: INT, `a``b`: INT>",
            "STRUCT<`my field`: STRING, `order`: INT, `a``b`: INT>",
            'STRUCT("my field" VARCHAR, "order" INTEGER, "a`b" INTEGER)',
            id="quoted-names",
        ),
    ],
)
def test_to_ddl(ddl: str, spark: str, duckdb: str) -> None:
    typ = parse_return_type(ddl)
    assert typ.to_ddl("spark") == spark
    assert typ.to_ddl("databricks") == spark
    assert typ.to_ddl("duckdb") == duckdb
    # Rendered DDL parses back to the same type, in both spellings.
    assert parse_return_type(spark) == typ
    assert parse_return_type(duckdb) == typ


def test_to_ddl_unknown_dialect() -> None:
    with pytest.raises(ConfigError, match="unknown dialect"):
        STRING.to_ddl("postgres")


@pytest.mark.parametrize(
    ("ddl", "schema"),
    [
        pytest.param("STRING", {"type": "string"}, id="string"),
        pytest.param(
            "BIGINT",
            {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
            id="bigint",
        ),
        pytest.param(
            "INT", {"type": "integer", "minimum": -2147483648, "maximum": 2147483647}, id="int"
        ),
        pytest.param("TINYINT", {"type": "integer", "minimum": -128, "maximum": 127}, id="tinyint"),
        pytest.param("DECIMAL(5,2)", {"type": "number"}, id="decimal"),
        pytest.param("BOOLEAN", {"type": "boolean"}, id="boolean"),
        pytest.param("DATE", {"type": "string", "format": "date"}, id="date"),
        pytest.param("TIMESTAMP", {"type": "string", "format": "date-time"}, id="timestamp"),
        pytest.param("ARRAY<STRING>", {"type": "array", "items": {"type": "string"}}, id="array"),
        pytest.param(
            "MAP<STRING, DOUBLE>",
            {"type": "object", "additionalProperties": {"type": "number"}},
            id="map",
        ),
        pytest.param(
            "STRUCT<label: STRING, score: DOUBLE, tags: ARRAY<STRING>>",
            {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "score": {"type": "number"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["label", "score", "tags"],
                "additionalProperties": False,
            },
            id="struct",
        ),
    ],
)
def test_to_json_schema(ddl: str, schema: dict[str, object]) -> None:
    assert parse_return_type(ddl).to_json_schema() == schema


@pytest.mark.parametrize(
    "ddl",
    [
        pytest.param("STRING", id="string"),
        pytest.param("DECIMAL(10,2)", id="decimal"),
        pytest.param("STRUCT<label: STRING, score: DOUBLE>", id="struct"),
        pytest.param("ARRAY<STRUCT<`a b`: MAP<STRING, ARRAY<INT>>>>", id="nested"),
    ],
)
def test_json_round_trip(ddl: str) -> None:
    typ = parse_return_type(ddl)
    text = typ.to_json()
    assert SQLType.from_json(text) == typ
    assert json.loads(text)["kind"] == typ.kind
    # Stable: the same type always serialises the same way.
    assert parse_return_type(typ.to_ddl("duckdb")).to_json() == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("[]", id="not-object"),
        pytest.param('{"kind": "NOPE"}', id="bad-kind"),
        pytest.param('{"kind": "ARRAY"}', id="array-without-element"),
    ],
)
def test_from_json_rejects(text: str) -> None:
    with pytest.raises(SQLParseError, match="bad returnType"):
        SQLType.from_json(text)


@pytest.mark.parametrize(
    ("ddl", "where"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("   ", "empty", id="blank"),
        pytest.param("FOO", "unknown type 'FOO'", id="unknown-type"),
        pytest.param("ARRAY<FOO>", "unknown type 'FOO'", id="unknown-element"),
        pytest.param("ARRAY<STRING", "expected '>'", id="unclosed-array"),
        pytest.param("ARRAY<STRING>>", "unexpected '>'", id="extra-close"),
        pytest.param("STRUCT<>", "at least one field", id="empty-struct"),
        pytest.param("STRUCT<a: INT", "expected '>'", id="unclosed-struct"),
        pytest.param("STRUCT<a INT, A STRING>", "duplicate field", id="duplicate-field"),
        pytest.param("MAP<STRING>", "expected ','", id="map-one-type"),
        pytest.param("DECIMAL(50,2)", "DECIMAL", id="decimal-range"),
        pytest.param("INT(3)", "no parameters", id="int-params"),
        pytest.param("string comment", "unexpected 'comment'", id="trailing-word"),
        pytest.param("label STRING,", "field name", id="schema-trailing-comma"),
        pytest.param("label FOO", "unknown type 'FOO'", id="schema-unknown-type"),
        pytest.param("STRUCT<a: INT>; DROP TABLE x", "unexpected character", id="injection"),
    ],
)
def test_bad_return_type(ddl: str, where: str) -> None:
    with pytest.raises(SQLParseError) as info:
        parse_return_type(ddl)
    message = str(info.value)
    assert message.startswith(f"bad returnType {ddl!r}")
    assert where in message


def test_bad_return_type_position() -> None:
    with pytest.raises(SQLParseError) as info:
        parse_return_type("STRUCT<a: INT, b: NOPE>")
    assert (info.value.line, info.value.col) == (1, 19)


def test_helpers() -> None:
    assert embedding_type() == parse_return_type("ARRAY<FLOAT>")
    assert error_struct(STRING).to_ddl("spark") == "STRUCT<result: STRING, errorMessage: STRING>"
    assert error_struct(LABEL_SCORE).to_ddl("duckdb") == (
        "STRUCT(result STRUCT(label VARCHAR, score DOUBLE), errorMessage VARCHAR)"
    )
    assert STRING.is_string and not INT.is_string


def test_invalid_kind() -> None:
    with pytest.raises(SQLParseError):
        SQLType("VARIANT")


def _nested(kind: str, depth: int) -> str:
    inner = "STRING"
    for _ in range(depth):
        inner = {"ARRAY": f"ARRAY<{inner}>", "STRUCT": f"STRUCT<a: {inner}>",
                 "MAP": f"MAP<STRING, {inner}>", "DUCKDB": f"{inner}[]",
                 "DUCKDB_STRUCT": f"STRUCT(a {inner})"}[kind]
    return inner


@pytest.mark.parametrize("kind", ["ARRAY", "STRUCT", "MAP", "DUCKDB", "DUCKDB_STRUCT"])
def test_nesting_up_to_the_limit_parses_and_is_measured(kind: str) -> None:
    typ = parse_return_type(_nested(kind, MAX_TYPE_DEPTH))
    assert typ.depth == MAX_TYPE_DEPTH
    assert parse_return_type(f"label STRING, deep {_nested(kind, MAX_TYPE_DEPTH - 1)}").depth == (
        MAX_TYPE_DEPTH
    )


@pytest.mark.parametrize("depth", [MAX_TYPE_DEPTH + 1, 200, 5000])
@pytest.mark.parametrize("kind", ["ARRAY", "STRUCT", "MAP", "DUCKDB", "DUCKDB_STRUCT"])
def test_nesting_past_the_limit_is_refused_naming_the_limit_and_the_depth(
    kind: str, depth: int
) -> None:
    with pytest.raises(ConfigError) as info:  # 5000 levels: measured without recursing
        parse_return_type(_nested(kind, depth))
    assert str(info.value) == (
        f"bad returnType: its ARRAY, STRUCT and MAP types nest {depth} levels deep; at most "
        f"{MAX_TYPE_DEPTH} are supported (results cross Arrow, which carries no deeper types)"
    )


def test_the_bare_schema_form_counts_its_own_struct() -> None:
    with pytest.raises(ConfigError, match=f"nest {MAX_TYPE_DEPTH + 1} levels deep"):
        parse_return_type(f"label STRING, deep {_nested('ARRAY', MAX_TYPE_DEPTH)}")


@pytest.mark.parametrize(
    ("ddl", "depth"),
    [
        pytest.param("DECIMAL(10, 2)", 0, id="scalar-parentheses"),
        pytest.param("STRUCT<`a<(<`: DECIMAL(10,2)>", 1, id="brackets-in-a-quoted-name"),
        pytest.param('STRUCT("x((" INT, y ARRAY<INT>)', 2, id="duckdb-quoted"),
        pytest.param("STRUCT<array: INT, map: ARRAY<INT>>", 2, id="type-words-as-names"),
    ],
)
def test_depth_counts_only_nested_types(ddl: str, depth: int) -> None:
    assert parse_return_type(ddl).depth == depth
