"""Tests of transpile(): one golden file (each input once, its output per target dialect), DuckDB
execution, and errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pytest

from ai_query.errors import (
    ConfigError,
    SQLParseError,
    UnknownEndpointError,
    UnsupportedCallError,
)
from ai_query.sql import transpile

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class FakeCatalog:
    """A dict-backed endpoint catalog with the bundled and Databricks alias names."""

    tasks: ClassVar[dict[str, str]] = {
        "smollm2-135m-instruct": "llm/v1/chat",
        "databricks-meta-llama-3-3-70b-instruct": "llm/v1/chat",
        "all-minilm-l6-v2": "llm/v1/embeddings",
        "databricks-gte-large-en": "llm/v1/embeddings",
    }

    def task_of(self, name: str) -> str:
        if name not in self.tasks:
            raise UnknownEndpointError(name, list(self.tasks))
        return self.tasks[name]


#: The target dialects every golden case carries an expected output for.
DIALECTS = ("duckdb", "spark")
_TARGET = re.compile(r"^-- (\w+)\b")


def load_golden(path: Path) -> dict[str, list[Any]]:
    """Per target dialect, the golden cases as pytest params (read dialect, sql, want).

    Cases are separated by blank lines. A case is its input statement, written once, then one
    expected statement per target, each after a ``-- <dialect>`` line (``-- spark: why`` may say
    why). Other ``--`` lines before the input are comments: the first one names the case, and
    ``-- read: <dialect>`` sets the input dialect (default databricks).
    """
    cases: dict[str, list[Any]] = {dialect: [] for dialect in DIALECTS}
    for block in re.split(r"\n\s*\n", path.read_text()):
        lines = block.strip().splitlines()
        sections: dict[str, list[str]] = {"input": []}
        comments: list[str] = []
        current = "input"
        for line in lines:
            target = _TARGET.match(line)
            if target and target.group(1) in DIALECTS:
                current = target.group(1)
                if current in sections:
                    raise ValueError(f"{path.name}: two {current} outputs in:\n{block}")
                sections[current] = []
            elif line.startswith("--"):
                if current != "input" or sections["input"]:
                    raise ValueError(f"{path.name}: a comment after the input in:\n{block}")
                comments.append(line)
            else:
                sections[current].append(line)
        if not any(line.strip() for line in sections["input"]):
            continue  # the file's header
        statements = {k: _statements("\n".join(v)) for k, v in sections.items()}
        if any(len(statements.get(k, [])) != 1 for k in ("input", *DIALECTS)):
            raise ValueError(f"{path.name}: expected one input, then one output per dialect "
                             f"{DIALECTS}, in:\n{block}")
        read = "databricks"
        for comment in comments:
            if comment.startswith("-- read:"):
                read = comment.split(":", 1)[1].strip()
        names = [c[2:].strip() for c in comments if not c.startswith("-- read:")]
        case_id = re.sub(r"\W+", "-", names[0]).strip("-") if names else f"case{len(cases['duckdb'])}"
        for dialect in DIALECTS:
            cases[dialect].append(
                pytest.param(read, statements["input"][0], statements[dialect][0], id=case_id)
            )
    return cases


def _statements(text: str) -> list[str]:
    return [s.strip() for s in re.split(r";\s*$", text, flags=re.MULTILINE) if s.strip()]


GOLDEN = load_golden(FIXTURES / "transpile.sql")
DUCKDB_CASES = GOLDEN["duckdb"]
SPARK_CASES = GOLDEN["spark"]


@pytest.mark.parametrize(("read", "sql", "expected"), DUCKDB_CASES)
def test_golden_duckdb(read: str, sql: str, expected: str) -> None:
    assert transpile(sql, read=read, write="duckdb", catalog=FakeCatalog()) == expected


@pytest.mark.parametrize(("read", "sql", "expected"), SPARK_CASES)
def test_golden_spark(read: str, sql: str, expected: str) -> None:
    assert transpile(sql, read=read, write="spark", catalog=FakeCatalog()) == expected


def test_golden_files_are_not_trivial() -> None:
    assert len(DUCKDB_CASES) >= 20 and len(SPARK_CASES) == len(DUCKDB_CASES)


# A stand-in for the real DuckDB UDF: same parameters as the registered macro, returning the
# VARCHAR the UDF would (JSON text for typed results, plain text otherwise).
STUB_MACROS = """
CREATE MACRO ai_query_stub_value(endpoint, returnType, responseFormat) AS CASE
    WHEN endpoint IN ('all-minilm-l6-v2', 'databricks-gte-large-en') THEN '[0.1,0.2]'
    WHEN returnType LIKE 'ARRAY%' THEN '["a","b"]'
    WHEN returnType LIKE 'STRUCT<label%' OR responseFormat LIKE 'STRUCT<label%' THEN '{"label":"x","score":1.0}'
    WHEN responseFormat LIKE 'STRUCT<title%' THEN '{"title":"t","year":2024}'
    WHEN responseFormat = 'json_object' THEN '{"any":"thing"}'
    ELSE NULL END;
CREATE MACRO ai_query(endpoint, request, returnType := NULL, failOnError := true,
                      modelParameters := NULL, responseFormat := NULL, files := NULL) AS CASE
    WHEN request IS NULL THEN NULL
    WHEN failOnError THEN coalesce(ai_query_stub_value(endpoint, returnType, responseFormat),
                                   'match')
    ELSE '{"result":' || coalesce(ai_query_stub_value(endpoint, returnType, responseFormat),
                                  to_json('match')::VARCHAR) || ',"errorMessage":null}'
    END;
CREATE MACRO __ai_query_vector(endpoint, request) AS CASE
    WHEN request IS NULL THEN NULL ELSE [0.1, 0.2]::FLOAT[] END;
CREATE TABLE reviews (id INTEGER, review VARCHAR);
INSERT INTO reviews VALUES (1, 'great'), (2, 'awful'), (3, NULL);
CREATE TABLE docs (id INTEGER, body VARCHAR);
INSERT INTO docs VALUES (1, 'doc one'), (2, 'doc two');
CREATE TABLE tickets (id INTEGER, body VARCHAR);
INSERT INTO tickets VALUES (1, 'it crashes'), (2, NULL);
ATTACH ':memory:' AS uc_catalog;
CREATE SCHEMA uc_catalog.schema;
CREATE TABLE uc_catalog.schema."table" (text VARCHAR);
INSERT INTO uc_catalog.schema."table" VALUES ('some text');
"""


@pytest.fixture
def con(fake_engine: Any) -> Any:
    """The stub ai_query above, and the real task functions on the deterministic engine."""
    from ai_query.catalog import Catalog
    from ai_query.udf.duckdb import register_task_functions

    connection = duckdb.connect()
    connection.execute(STUB_MACROS)
    register_task_functions(connection, Catalog.default(), fake_engine)
    yield connection
    connection.close()


@pytest.mark.parametrize(("read", "sql", "expected"), DUCKDB_CASES)
def test_golden_duckdb_runs(con: Any, read: str, sql: str, expected: str) -> None:
    con.execute(expected).fetchall()


@pytest.mark.parametrize(
    ("sql", "expected_type", "expected_value"),
    [
        pytest.param(
            "SELECT ai_query('smollm2-135m-instruct', review, "
            "returnType => 'STRUCT<label: STRING, score: DOUBLE>') AS s FROM reviews WHERE id = 1",
            "STRUCT(label VARCHAR, score DOUBLE)",
            {"label": "x", "score": 1.0},
            id="struct",
        ),
        pytest.param(
            "SELECT ai_query('all-minilm-l6-v2', body) AS e FROM docs WHERE id = 1",
            "FLOAT[]",
            pytest.approx([0.1, 0.2]),
            id="embedding",
        ),
        pytest.param(
            "SELECT ai_query('smollm2-135m-instruct', review, failOnError => false) AS r "
            "FROM reviews WHERE id = 1",
            "STRUCT(result VARCHAR, errorMessage VARCHAR)",
            {"result": "match", "errorMessage": None},
            id="fail-on-error-false",
        ),
        pytest.param(
            "SELECT ai_query('smollm2-135m-instruct', review) AS r FROM reviews WHERE id = 1",
            "VARCHAR",
            "match",
            id="text",
        ),
        pytest.param(
            "SELECT ai_query('smollm2-135m-instruct', review, returnType => 'STRUCT<label: "
            "STRING, score: DOUBLE>') AS s FROM reviews WHERE id = 3",
            "STRUCT(label VARCHAR, score DOUBLE)",
            None,
            id="null-request",
        ),
    ],
)
def test_duckdb_result_types(con: Any, sql: str, expected_type: str, expected_value: Any) -> None:
    result = con.execute(transpile(sql, write="duckdb", catalog=FakeCatalog()))
    assert str(result.description[0][1]).replace('"', "") == expected_type
    assert result.fetchone()[0] == expected_value


def test_databricks_target_keeps_calls_unwrapped() -> None:
    sql = (
        "SELECT ai_query('all-minilm-l6-v2', body, failOnError => false, "
        "modelParameters => named_struct('max_tokens', 5)) AS e FROM docs"
    )
    assert transpile(sql, write="databricks", catalog=FakeCatalog()) == (
        "SELECT ai_query('all-minilm-l6-v2', body, failOnError => FALSE, "
        "modelParameters => named_struct('max_tokens', 5)) AS e FROM docs"
    )


def test_without_catalog_assumes_chat() -> None:
    sql = "SELECT ai_query('anything', x) AS a, ai_query('anything', x, returnType => 'INT') AS b"
    assert transpile(sql) == (
        "SELECT ai_query('anything', x) AS a, "
        "CAST(CAST(ai_query('anything', x, returnType => 'INT') AS JSON) AS INTEGER) AS b"
    )


def test_spark_scalar_return_type() -> None:
    sql = "SELECT ai_query('smollm2-135m-instruct', x, returnType => 'DATE') AS d FROM t"
    assert transpile(sql, write="spark", catalog=FakeCatalog()) == (
        "SELECT from_json(concat('[', ai_query('smollm2-135m-instruct', x, returnType => 'DATE'),"
        " ']'), 'ARRAY<DATE>')[0] AS d FROM t"
    )


def test_multiple_statements() -> None:
    sql = "SELECT ai_query('smollm2-135m-instruct', 'a'); SELECT 1;"
    assert transpile(sql, catalog=FakeCatalog()) == (
        "SELECT ai_query('smollm2-135m-instruct', 'a');\nSELECT 1"
    )


def test_unknown_endpoint() -> None:
    with pytest.raises(UnknownEndpointError) as info:
        transpile("SELECT 1; SELECT ai_query('nope', x) FROM t", catalog=FakeCatalog())
    assert info.value.name == "nope"
    assert "smollm2-135m-instruct" in str(info.value)


def test_unknown_model_parameter() -> None:
    with pytest.raises(ConfigError, match="max_tokenz"):
        transpile(
            "SELECT ai_query('smollm2-135m-instruct', x, "
            "modelParameters => named_struct('max_tokenz', 5)) FROM t",
            catalog=FakeCatalog(),
        )


def test_bad_return_type() -> None:
    with pytest.raises(SQLParseError, match=r"bad returnType 'STRUCT<label STRING'"):
        transpile("SELECT ai_query('m', x, returnType => 'STRUCT<label STRING') FROM t")


def test_embeddings_with_response_format() -> None:
    with pytest.raises(ConfigError, match="embeddings"):
        transpile(
            "SELECT ai_query('all-minilm-l6-v2', x, responseFormat => 'json_object') FROM t",
            catalog=FakeCatalog(),
        )


def test_bad_call_shape() -> None:
    with pytest.raises(UnsupportedCallError, match="endpoint must be a string literal"):
        transpile("SELECT ai_query(ep, x) FROM t")


def test_parse_error_has_line_and_col() -> None:
    with pytest.raises(SQLParseError) as info:
        transpile("SELECT id,\n  ai_query('m', x FROM t")
    assert info.value.line == 2
    assert info.value.col is not None and info.value.col > 1
    assert "line 2" in str(info.value)


@pytest.mark.parametrize(
    ("read", "write"),
    [
        pytest.param("postgres", "duckdb", id="read"),
        pytest.param("databricks", "mysql", id="write"),
    ],
)
def test_unknown_dialect(read: str, write: str) -> None:
    with pytest.raises(ConfigError, match="dialect"):
        transpile("SELECT 1", read=read, write=write)
