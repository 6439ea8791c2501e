"""The task functions in DuckDB on the deterministic engine (fast): types, NULLs, duplicates,
guided outputs, errors before rows run, ``register(con)`` on a plain connection, and the
catalog's choice of endpoint. The same functions run through real vLLM in
test_task_functions_real.py."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

import ai_query
from ai_query.catalog import Catalog
from ai_query.errors import ConfigError, UnsupportedCallError
from ai_query.sql.task_functions import SENTIMENTS
from ai_query.udf.duckdb import register
from tests.udf.counting import CountingEngine

TEXTS = [
    (1, "I love this phone, the battery lasts for days."),
    (2, None),
    (3, "I love this phone, the battery lasts for days."),
    (4, "John Smith from Paris says the screen broke after a week."),
]


@pytest.fixture
def con(counting: CountingEngine) -> Any:
    c = ai_query.connect(engine=counting)  # type: ignore[arg-type]
    c.execute("CREATE TABLE t (id INTEGER, c VARCHAR)")
    c.executemany("INSERT INTO t VALUES (?, ?)", TEXTS)
    yield c
    c.close()


CASES = [
    pytest.param("ai_analyze_sentiment(c)", "VARCHAR", id="sentiment"),
    pytest.param("ai_classify(c, ['phone', 'laptop', 'tablet'])", "VARCHAR", id="classify"),
    pytest.param(
        "ai_extract(c, ['person', 'location'])",
        'STRUCT(person VARCHAR, "location" VARCHAR)',
        id="extract",
    ),
    pytest.param("ai_fix_grammar(c)", "VARCHAR", id="fix-grammar"),
    pytest.param("ai_gen(c)", "VARCHAR", id="gen"),
    pytest.param("ai_mask(c, ['person', 'location'])", "VARCHAR", id="mask"),
    pytest.param("ai_similarity(c, 'a phone review')", "FLOAT", id="similarity"),
    pytest.param("ai_summarize(c)", "VARCHAR", id="summarize"),
    pytest.param("ai_summarize(c, 5)", "VARCHAR", id="summarize-max-words"),
    pytest.param("ai_translate(c, 'de')", "VARCHAR", id="translate"),
]


@pytest.mark.parametrize(("call", "sql_type"), CASES)
def test_types_nulls_and_duplicates(con: Any, call: str, sql_type: str) -> None:
    rel = con.sql(f"SELECT id, {call} AS r FROM t ORDER BY id")
    assert str(rel.types[1]) == sql_type
    rows = rel.fetchall()
    assert rows[1] == (2, None)  # NULL in -> NULL out
    assert rows[0][1] is not None and rows[0][1] == rows[2][1]  # duplicates agree
    assert rows[3][1] is not None


def test_null_rows_make_no_model_call(con: Any, counting: CountingEngine) -> None:
    con.sql("SELECT ai_classify(c, ['a', 'b']) FROM t WHERE id = 2").fetchall()
    assert counting.rows == 0


def test_guided_outputs_are_always_valid(con: Any) -> None:
    labels = ["billing", "shipping", "quality", "other"]
    con.execute("CREATE TABLE many AS SELECT 'review number ' || i AS c FROM range(60) r(i)")
    rows = con.sql(
        "SELECT ai_analyze_sentiment(c) s, ai_classify(c, ['billing', 'shipping', 'quality', "
        '\'other\']) k, ai_classify(c, \'{"yes": "agrees", "no": "disagrees"}\') j FROM many'
    ).fetchall()
    assert {r[0] for r in rows} <= set(SENTIMENTS)
    assert {r[1] for r in rows} <= set(labels) and len({r[1] for r in rows}) > 1
    assert {r[2] for r in rows} <= {"yes", "no"}


def test_extract_gives_the_labels_as_fields(con: Any) -> None:
    row = con.sql(
        "SELECT ai_extract(c, ['person', 'location']).person AS p, "
        "ai_extract(c, ['person', 'location']) AS e FROM t WHERE id = 4"
    ).fetchall()[0]
    assert isinstance(row[0], str) and set(row[1]) == {"person", "location"}


def test_similarity_of_a_text_with_itself_is_one(con: Any) -> None:
    value = con.sql("SELECT ai_similarity(c, c) FROM t WHERE id = 1").fetchall()[0][0]
    assert value == pytest.approx(1.0, abs=1e-5)


def test_summarize_caps_words(con: Any) -> None:
    text = con.sql("SELECT ai_summarize(c, 3) FROM t WHERE id = 1").fetchall()[0][0]
    assert len(text.split()) <= 3


@pytest.mark.parametrize(
    ("sql", "error", "message"),
    [
        pytest.param(
            "SELECT ai_translate(c, 'xx') FROM t",
            ConfigError,
            "unsupported language",
            id="language",
        ),
        pytest.param(
            "SELECT ai_classify(c, ['only']) FROM t", ConfigError, "2 to 500 labels", id="one-label"
        ),
        pytest.param(
            "SELECT ai_classify(c, [" + ", ".join(f"'l{i}'" for i in range(501)) + "]) FROM t",
            ConfigError,
            "got 501",
            id="too-many-labels",
        ),
        pytest.param("SELECT ai_summarize(c, -2) FROM t", ConfigError, "max_words", id="words"),
        pytest.param("SELECT ai_gen(c, 'x') FROM t", UnsupportedCallError, "takes 1", id="count"),
        pytest.param(
            "SELECT ai_extract(c, c) FROM t", UnsupportedCallError, "constant", id="column-labels"
        ),
    ],
)
def test_bad_calls_fail_before_rows_run(
    con: Any, counting: CountingEngine, sql: str, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        con.sql(sql)
    assert counting.rows == 0


def test_register_on_a_plain_connection(counting: CountingEngine) -> None:
    raw = duckdb.connect()
    register(raw, engine=counting)  # type: ignore[arg-type]
    raw.execute("CREATE TABLE t (c VARCHAR)")
    raw.executemany("INSERT INTO t VALUES (?)", [("good",), (None,)])
    rows = raw.sql(
        "SELECT ai_classify(c, ['a', 'b']), ai_similarity(c, 'good'), ai_summarize(c, 2), "
        "ai_extract(c, ['x']) FROM t"
    ).fetchall()
    assert rows[0][0] in ("a", "b") and rows[0][1] == pytest.approx(1.0, abs=1e-5)
    assert rows[0][3].startswith("{")  # JSON text without the rewriting connection
    assert rows[1] == (None, None, None, None)
    with pytest.raises(duckdb.Error, match="unsupported language"):
        raw.sql("SELECT ai_translate(c, 'xx') FROM t").fetchall()


def test_catalog_task_functions_choose_the_endpoint(fake_engine: Any) -> None:
    from ai_query.engine.backends.deterministic import DeterministicBackend
    from ai_query.engine.local import LocalEngine

    catalog = Catalog.from_data(
        {
            "include_defaults": True,
            "endpoints": [
                {
                    "name": "my-chat",
                    "config": {"served_entities": [{"entity_name": "smollm2-135m-instruct"}]},
                }
            ],
            "task_functions": {"ai_translate": "my-chat"},
        }
    )
    assert Catalog.from_data(catalog.to_data()).task_functions() == {"ai_translate": "my-chat"}
    counting = CountingEngine(LocalEngine(catalog, backend_factory=DeterministicBackend))
    con = ai_query.connect(engine=counting)  # type: ignore[arg-type]
    con.sql("SELECT ai_translate('hi', 'fr'), ai_gen('hi'), ai_similarity('a', 'b')").fetchall()
    assert set(counting.endpoints) == {"my-chat", "smollm2-135m-instruct", "all-minilm-l6-v2"}


def test_catalog_task_functions_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown endpoint"):
        Catalog.from_data({"include_defaults": True, "task_functions": {"llm/v1/chat": "nope"}})
    with pytest.raises(ConfigError, match="must be a task"):
        Catalog.from_data(
            {"include_defaults": True, "task_functions": {"chat": "smollm2-135m-instruct"}}
        )
    wrong = Catalog.from_data(
        {"include_defaults": True, "task_functions": {"ai_similarity": "smollm2-135m-instruct"}}
    )
    with pytest.raises(ConfigError, match="needs llm/v1/embeddings"):
        wrong.task_function_endpoint("ai_similarity", "llm/v1/embeddings")
    only_chat = Catalog.from_data(
        [{"name": "c", "config": {"served_entities": [{"entity_name": "smollm2-135m-instruct"}]}}]
    )
    assert only_chat.task_function_endpoint("ai_gen", "llm/v1/chat") == "c"
    with pytest.raises(ConfigError, match="no llm/v1/embeddings endpoint"):
        only_chat.task_function_endpoint("ai_similarity", "llm/v1/embeddings")


def test_ai_extract_with_a_typed_nested_schema_returns_duckdb_types(con: Any) -> None:
    schema = (
        '{"person": "who the text is about", "age": {"type": "integer"}, '
        '"place": {"type": "object", "properties": {"city": "string", "country": "string"}}, '
        '"items": {"type": "array", "items": "string"}, '
        '"mood": {"type": "enum", "enum": ["happy", "sad"]}}'
    )
    rel = con.sql(
        f"SELECT ai_extract(c, '{schema}', MAP {{'instructions': 'Reviews.'}}) AS e "
        "FROM t ORDER BY id"
    )
    assert str(rel.types[0]) == (
        'STRUCT(person VARCHAR, age BIGINT, place STRUCT(city VARCHAR, country VARCHAR), '
        "items VARCHAR[], mood VARCHAR)"
    )
    rows = [r[0] for r in rel.fetchall()]
    assert rows[1] is None
    assert set(rows[0]) == {"person", "age", "place", "items", "mood"}
    assert rows[0]["mood"] in ("happy", "sad", None)
