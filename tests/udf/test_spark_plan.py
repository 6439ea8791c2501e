"""How Spark's analyzer types a call (:func:`ai_query.udf.spark.typed.plan_call`): the same
rules and the same error text as DuckDB's calls; the Java builders cover the same functions."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ai_query.catalog import Catalog
from ai_query.errors import AIQueryError
from ai_query.sql import transpile
from ai_query.udf.spark import typed

CHAT, EMBED = "smollm2-135m-instruct", "all-minilm-l6-v2"
TASKS = typed.EndpointTasks.from_catalog(Catalog.default())


@dataclass
class Arg:
    """What Spark's analyzer hands a UDTF's analyze step (``AnalyzeArgument``)."""

    value: Any = None
    isConstantExpression: bool = True


COLUMN = Arg(None, isConstantExpression=False)


def plan(function: str, *args: Arg, **kwargs: Arg) -> dict[str, Any]:
    return typed.plan_call(function, args, kwargs, TASKS)


def test_types_follow_the_duckdb_rules() -> None:
    struct = "STRUCT<label: STRING, score: DOUBLE>"
    assert plan("ai_query", Arg(CHAT), COLUMN, Arg(struct)) == {
        "mode": "json", "ddl": "STRUCT<label: STRING, score: DOUBLE>",
    }
    assert plan("ai_query", Arg(CHAT), COLUMN, returnType=Arg("INT")) == {
        "mode": "json_scalar", "ddl": "ARRAY<INT>",
    }
    assert plan("ai_query", Arg(CHAT), COLUMN) == {"mode": "text"}
    assert plan("ai_query", Arg(CHAT), COLUMN, failOnError=Arg(False)) == {
        "mode": "json", "ddl": "STRUCT<result: STRING, errorMessage: STRING>",
    }
    params = Arg(type("Row", (), {"asDict": lambda self: {"max_tokens": 5}})())
    assert plan("ai_query", Arg(CHAT), COLUMN, modelParameters=params) == {"mode": "text"}
    assert plan("ai_extract", COLUMN, Arg(["person", "place"])) == {
        "mode": "json", "ddl": "STRUCT<person: STRING, place: STRING>",
    }
    assert plan("ai_classify", COLUMN, Arg(["a", "b"]), Arg({"multilabel": "true"})) == {
        "mode": "json", "ddl": "ARRAY<STRING>",
    }
    assert plan("ai_classify", COLUMN, Arg(["a", "b"])) == {"mode": "text"}


def test_a_plain_embeddings_call_runs_the_vector_udf_with_its_arguments_wherever_they_are() -> None:
    vector = {"mode": "vector", "function": "__ai_query_vector"}
    assert plan("ai_query", Arg(EMBED), COLUMN) == {**vector, "args": [0, 1]}
    assert plan("ai_query", request=COLUMN, endpoint=Arg(EMBED)) == {**vector, "args": [1, 0]}
    failing_softly = plan("ai_query", Arg(EMBED), COLUMN, failOnError=Arg(False))
    assert failing_softly["ddl"] == "STRUCT<result: ARRAY<FLOAT>, errorMessage: STRING>"


@pytest.mark.parametrize(
    "sql_args, args, kwargs",
    [
        ("'nope', r", [Arg("nope"), COLUMN], {}),
        (f"'{CHAT}', r, 'STRUCT<x'", [Arg(CHAT), COLUMN, Arg("STRUCT<x")], {}),
        (f"'{EMBED}', r, returnType => 'INT'", [Arg(EMBED), COLUMN], {"returnType": Arg("INT")}),
        (f"'{CHAT}', r, modelParameters => named_struct('bogus', 1)",
         [Arg(CHAT), COLUMN], {"modelParameters": Arg('{"bogus": 1}')}),
        (f"'{CHAT}', r, failOnError => 'no'", [Arg(CHAT), COLUMN], {"failOnError": Arg("no")}),
    ],
)
def test_a_bad_call_gets_the_message_duckdb_gives(
    sql_args: str, args: list[Arg], kwargs: dict[str, Arg]
) -> None:
    with pytest.raises(AIQueryError) as duckdb:
        transpile(f"SELECT ai_query({sql_args}) FROM t", write="duckdb", catalog=TASKS)
    assert plan("ai_query", *args, **kwargs) == {"error": str(duckdb.value)}


def test_the_java_builders_cover_the_same_functions() -> None:
    source = next(Path(typed.__file__).parent.joinpath("java").rglob("AiQueryExtension.java"))
    text = source.read_text()
    listed = re.search(r"FUNCTIONS = \{(.*?)\};", text, re.S)
    assert listed is not None
    assert tuple(re.findall(r'"(\w+)"', listed.group(1))) == typed.FUNCTIONS
    assert f'PLAN_FUNCTION = "{typed.PLAN_FUNCTION}"' in text
    assert '"__" + function + "_text"' in text and typed.hidden_name("x") == "__x_text"


def test_a_connect_session_without_the_extension_warns_once(monkeypatch: Any) -> None:
    class Conf:
        def get(self, key: str, default: Any = None) -> Any:
            return default

    session = type("Session", (), {"conf": Conf()})()
    monkeypatch.setattr(typed, "is_connect", lambda spark: True)
    monkeypatch.setattr(typed, "_warned", set())
    with pytest.warns(RuntimeWarning, match=r"start-connect-server.sh \$\(ai-query spark-conf\)"):
        assert typed.install_builders(session) is False
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert typed.install_builders(session) is False
    assert again == []  # once per process


@pytest.mark.parametrize(("host", "local"), [("127.0.0.1", True), ("spark-head.internal", False)])
def test_an_embedded_server_only_for_a_local_mode_connect_server_on_this_machine(
    monkeypatch: Any, host: str, local: bool
) -> None:
    import ai_query.udf.spark as spark_udf

    class Conf:
        def get(self, key: str, default: Any = None) -> Any:
            return "local[2]" if key == "spark.master" else default

    session = type("Session", (), {"conf": Conf(), "client": type("C", (), {"host": host})()})()
    monkeypatch.setattr(spark_udf, "is_connect", lambda spark: True)
    assert spark_udf._is_local(session) is local
