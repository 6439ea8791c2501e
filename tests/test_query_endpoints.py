"""The endpoints a SQL text names, read before it runs (its models start then)."""

from __future__ import annotations

import pytest

from ai_query.catalog import Catalog
from ai_query.query_endpoints import endpoints_in_sql

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


@pytest.mark.parametrize(
    ("sql", "read", "expected"),
    [
        pytest.param(f"SELECT ai_query('{CHAT}', 'hi')", "databricks", [CHAT], id="literal"),
        pytest.param(
            "SELECT AI_QUERY(endpoint => 'databricks-gte-large-en', request => t.x), "
            f"ai_query('{CHAT}', x) FROM t",
            "databricks",
            ["databricks-gte-large-en", CHAT],
            id="named-args-and-order",
        ),
        pytest.param(
            f"SELECT ai_query('{CHAT}', a), ai_query('{CHAT}', b) FROM t", "duckdb", [CHAT],
            id="once-each",
        ),
        pytest.param(
            "SELECT ai_classify(x, ARRAY('a', 'b')), ai_similarity(x, y), ai_agg(x, 'sum up')"
            " FROM t",
            "databricks",
            [CHAT, EMBED],
            id="task-functions",
        ),
        pytest.param(
            f"WITH q AS (SELECT ai_query('{EMBED}', 'x') AS v) SELECT * FROM q; "
            f"SELECT ai_query('{CHAT}', 'y')",
            "databricks",
            [EMBED, CHAT],
            id="ctes-and-statements",
        ),
        pytest.param("SELECT 1", "databricks", [], id="none"),
        pytest.param(f"SELECT ai_query('nope', 'x'), ai_query('{CHAT}', 'y')", "databricks",
                     [], id="unknown-endpoint"),
        pytest.param(
            f"SELECT ai_query('{CHAT}', 'x', modelParameters => named_struct('max_tokenz', 1))",
            "databricks", [], id="bad-parameter",
        ),
        pytest.param("SELEC ai_query('x', ", "databricks", [], id="does-not-parse"),
        pytest.param("SELECT ai_query(t.endpoint, 'hi') FROM t", "databricks", [], id="unbound"),
    ],
)
def test_endpoints_in_sql(sql: str, read: str, expected: list[str]) -> None:
    assert endpoints_in_sql(sql, read, Catalog.default()) == expected


def test_a_catalog_s_task_functions_pick_the_endpoint() -> None:
    catalog = Catalog.from_data({
        "include_defaults": True,
        "endpoints": [{"name": "big", "config": {"served_entities": [
            {"entity_name": "/models/big", "task": "llm/v1/chat"}]}}],
        "task_functions": {"ai_translate": "big"},
    })
    sql = "SELECT ai_translate(x, 'de'), ai_gen(x) FROM t"
    assert endpoints_in_sql(sql, "databricks", catalog) == ["big", CHAT]
