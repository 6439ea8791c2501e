"""Tests of finding and binding ai_query(...) calls (ai_query.sql.calls)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from ai_query.errors import ConfigError, SQLParseError, UnsupportedCallError
from ai_query.options import ModelParameters
from ai_query.sql import AIQueryCall, bind_call, find_calls


def one_call(sql: str, read: str = "databricks") -> AIQueryCall:
    calls = find_calls(sqlglot.parse_one(sql, read=read))
    assert len(calls) == 1
    return calls[0]


@pytest.mark.parametrize(
    ("sql", "read"),
    [
        pytest.param(
            "SELECT ai_query('m', t, 'STRUCT<a: INT>', false, named_struct('max_tokens', 5), "
            "'json_object') FROM x",
            "databricks",
            id="positional",
        ),
        pytest.param(
            "SELECT ai_query('m', t, returnType => 'STRUCT<a: INT>', failOnError => false, "
            "modelParameters => named_struct('max_tokens', 5), responseFormat => 'json_object') "
            "FROM x",
            "databricks",
            id="named-arrow",
        ),
        pytest.param(
            "SELECT AI_QUERY(ENDPOINT => 'm', REQUEST => t, RETURNTYPE => 'STRUCT<a: INT>', "
            "FAILONERROR => FALSE, MODELPARAMETERS => named_struct('max_tokens', 5), "
            "RESPONSEFORMAT => 'json_object') FROM x",
            "spark",
            id="named-upper",
        ),
        pytest.param(
            "SELECT ai_query(responseformat => 'json_object', modelparameters => "
            "named_struct('max_tokens', 5), failonerror => false, returntype => 'STRUCT<a: INT>', "
            "request => t, endpoint => 'm') FROM x",
            "databricks",
            id="named-lower-reordered",
        ),
        pytest.param(
            "SELECT ai_query('m', t, returnType := 'STRUCT<a: INT>', failOnError := false, "
            "modelParameters := {'max_tokens': 5}, responseFormat := 'json_object') FROM x",
            "duckdb",
            id="duckdb-walrus",
        ),
        pytest.param(
            "SELECT ai_query('m', t, returnType => 'STRUCT<a: INT>', failOnError => false, "
            "modelParameters => MAP {'max_tokens': 5}, responseFormat => 'json_object') FROM x",
            "duckdb",
            id="duckdb-arrow-map",
        ),
        pytest.param(
            "SELECT ai_query('m', t, 'STRUCT<a: INT>', failOnError => false, "
            "modelParameters => '{\"max_tokens\": 5}', responseFormat => 'json_object') FROM x",
            "databricks",
            id="mixed-json-params",
        ),
    ],
)
def test_bind_every_way(sql: str, read: str) -> None:
    call = one_call(sql, read)
    assert call.endpoint == "m"
    assert call.request == exp.column("t")
    assert call.return_type == "STRUCT<a: INT>"
    assert call.fail_on_error is False
    assert call.model_parameters == {"max_tokens": 5}
    assert call.response_format == "json_object"
    options = call.options()
    assert options.model_parameters == ModelParameters(max_tokens=5)
    assert options.endpoint == "m" and options.fail_on_error is False


def test_defaults() -> None:
    call = one_call("SELECT ai_query('m', 'hi')")
    assert (call.return_type, call.fail_on_error, call.model_parameters, call.response_format) == (
        None,
        True,
        {},
        None,
    )
    assert call.request == exp.Literal.string("hi")
    assert isinstance(call.node, exp.Anonymous)


@pytest.mark.parametrize(
    ("params_sql", "read", "expected"),
    [
        pytest.param(
            "named_struct('max_tokens', 100, 'temperature', 0.7, 'top_k', -1)",
            "databricks",
            {"max_tokens": 100, "temperature": 0.7, "top_k": -1},
            id="named-struct",
        ),
        pytest.param(
            "named_struct('stop', array('a', 'b'), 'seed', 1)",
            "spark",
            {"stop": ["a", "b"], "seed": 1},
            id="named-struct-array",
        ),
        pytest.param("struct(100 AS max_tokens)", "spark", {"max_tokens": 100}, id="struct-as"),
        pytest.param("map('max_tokens', 100)", "spark", {"max_tokens": 100}, id="spark-map"),
        pytest.param(
            "{'max_tokens': 100, 'stop': ['x']}",
            "duckdb",
            {"max_tokens": 100, "stop": ["x"]},
            id="duckdb-struct",
        ),
        pytest.param("map(['top_p'], [0.5])", "duckdb", {"top_p": 0.5}, id="duckdb-map-lists"),
        pytest.param(
            "to_json(named_struct('max_tokens', 3))", "spark", {"max_tokens": 3}, id="to-json"
        ),
        pytest.param("'{\"temperature\": 0.2}'", "databricks", {"temperature": 0.2}, id="json"),
        pytest.param("NULL", "databricks", {}, id="null"),
    ],
)
def test_model_parameters(params_sql: str, read: str, expected: dict[str, Any]) -> None:
    call = one_call(f"SELECT ai_query('m', t, modelParameters => {params_sql}) FROM x", read)
    assert call.model_parameters == expected
    call.options()  # all valid parameters


def test_unknown_model_parameter_key() -> None:
    call = one_call("SELECT ai_query('m', t, modelParameters => named_struct('max_toks', 1))")
    with pytest.raises(ConfigError, match="max_toks"):
        call.options()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        pytest.param("SELECT ai_query('m')", "request is missing", id="one-arg"),
        pytest.param("SELECT ai_query()", "endpoint is missing", id="no-args"),
        pytest.param("SELECT ai_query(request => t)", "endpoint is missing", id="no-endpoint"),
        pytest.param("SELECT ai_query(col, t)", "endpoint must be a string literal", id="ep-col"),
        pytest.param(
            "SELECT ai_query(concat('a', 'b'), t)", "endpoint must be a string", id="ep-expr"
        ),
        pytest.param("SELECT ai_query('m', t, foo => 1)", "unknown argument 'foo'", id="unknown"),
        pytest.param(
            "SELECT ai_query('m', t, foo => 1)", "allowed: endpoint, request", id="lists-allowed"
        ),
        pytest.param(
            "SELECT ai_query('m', t, returnType => 'INT', returntype => 'INT')",
            "returnType given twice",
            id="twice-named",
        ),
        pytest.param(
            "SELECT ai_query('m', t, request => t)", "request given twice", id="twice-mixed"
        ),
        pytest.param(
            "SELECT ai_query('m', returnType => 'INT', t)",
            "positional argument",
            id="positional-after-named",
        ),
        pytest.param(
            "SELECT ai_query('m', t, 'INT', true, NULL, 'text', 7)",
            "at most 6 arguments",
            id="too-many",
        ),
        pytest.param(
            "SELECT ai_query('m', t, returnType => rt)", "returnType must be a string", id="rt-col"
        ),
        pytest.param(
            "SELECT ai_query('m', t, responseFormat => 1)",
            "responseFormat must be a string",
            id="rf-number",
        ),
        pytest.param(
            "SELECT ai_query('m', t, failOnError => 'false')", "failOnError", id="fail-string"
        ),
        pytest.param(
            "SELECT ai_query('m', t, failOnError => flag)", "failOnError", id="fail-column"
        ),
        pytest.param(
            "SELECT ai_query('m', t, modelParameters => named_struct('max_tokens', n))",
            "modelParameters must be a constant",
            id="params-column-value",
        ),
        pytest.param(
            "SELECT ai_query('m', t, modelParameters => params)",
            "modelParameters must be a constant",
            id="params-column",
        ),
        pytest.param(
            "SELECT ai_query('m', t, modelParameters => '[1, 2]')",
            "not a JSON object",
            id="params-json-array",
        ),
        pytest.param(
            "SELECT ai_query('m', t, modelParameters => named_struct('seed', 1, 'seed', 2))",
            "given twice",
            id="params-duplicate-key",
        ),
    ],
)
def test_bind_errors(sql: str, message: str) -> None:
    with pytest.raises(UnsupportedCallError, match=message):
        find_calls(sqlglot.parse_one(sql, read="databricks"))


def test_bad_return_type_fails_at_bind() -> None:
    with pytest.raises(SQLParseError, match="bad returnType 'STRUCT<a: NOPE>'"):
        one_call("SELECT ai_query('m', t, returnType => 'STRUCT<a: NOPE>')")


def test_bind_call_rejects_other_nodes() -> None:
    with pytest.raises(UnsupportedCallError, match="not an ai_query"):
        bind_call(sqlglot.parse_one("SELECT upper(x)").find(exp.Upper) or exp.null())


def test_find_calls_everywhere() -> None:
    sql = """
    WITH c AS (SELECT ai_query('cte', a) AS x FROM t)
    SELECT ai_query('select1', b), ai_query('select2', b)
    FROM c JOIN u ON ai_query('join', u.k) = c.x
    WHERE ai_query('where', b) = 'yes'
      AND b IN (SELECT ai_query('subquery', z) FROM v)
    """
    calls = find_calls(sqlglot.parse_one(sql, read="databricks"))
    assert sorted(c.endpoint for c in calls) == [
        "cte",
        "join",
        "select1",
        "select2",
        "subquery",
        "where",
    ]


def test_find_calls_ignores_other_functions() -> None:
    tree = sqlglot.parse_one("SELECT my_ai_query('m', x), ai_query_v2('m', x), upper(x) FROM t")
    assert find_calls(tree) == []
