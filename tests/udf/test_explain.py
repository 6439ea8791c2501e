"""EXPLAIN of AI calls in DuckDB: rows, distinct requests, cache hits and prompt tokens before a
model is called; estimates from this machine's usage history."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ai_query.udf import explain
from ai_query.udf.duckdb import connect
from ai_query.udf.usage import Spell, UsageHistory
from tests.processes import run_script

CHAT = "smollm2-135m-instruct"
EXE = shutil.which("ai-query", path=str(Path(sys.executable).parent)) or "ai-query"
TABLE = (
    "CREATE TABLE t AS SELECT i, CASE WHEN i % 10 = 0 THEN NULL ELSE 'text ' || (i % 40) || "
    "' words here' END AS r FROM range(100) x(i)"
)


@pytest.fixture
def con(fake_engine, tmp_path):
    con = connect(engine=fake_engine)
    con.history = UsageHistory(tmp_path / "history.json")
    con._metered.history = con.history
    con.sql(TABLE)
    return con


def _explain(con, query: str) -> list[dict]:
    return con.sql("EXPLAIN " + query).to_arrow_table().to_pylist()


def test_figures_are_exact_on_a_known_table_and_no_model_is_called(con, fake_engine) -> None:
    query = f"SELECT ai_query('{CHAT}', r) FROM t WHERE i < 50"
    [row] = _explain(con, query)
    # rows 0..49: 5 NULL (i % 10 = 0); the 45 others are texts i % 40: 36 distinct (10, 20
    # and 30 are NULL rows; 41..49 repeat 1..9)
    assert (row["rows"], row["null_rows"], row["distinct_requests"]) == (50, 5, 36)
    assert (row["cached"], row["to_send"], row["counted"]) == (0, 36, "exact")
    assert row["prompt_tokens"] == 36 * 4  # the deterministic backend counts words
    assert row["max_output_tokens"] == 36 * 256 and row["expected_output_tokens"] is None
    assert fake_engine.model_calls == 0
    con.sql(query).fetchall()  # the real run: its answers are remembered by the engine
    [again] = _explain(con, query)
    assert (again["cached"], again["to_send"], again["prompt_tokens"]) == (36, 0, 0)
    # the run taught the history: expected output and time are now estimated
    [other] = _explain(con, f"SELECT ai_query('{CHAT}', r || '!') FROM t LIMIT 7")
    assert other["rows"] == 7 and other["expected_output_tokens"] is not None
    assert other["estimated_seconds"] is not None and other["note"] is None


def test_execute_and_databricks_sql_explain_too_and_plain_explain_is_duckdbs(con) -> None:
    rows = con.execute(f"EXPLAIN SELECT ai_query('{CHAT}', r) FROM t").fetchall()
    assert len(rows) == 1 and rows[0][3] == 100
    assert con.databricks_sql(f"explain SELECT ai_query('{CHAT}', r) FROM t").fetchall() == rows
    assert con.sql("EXPLAIN SELECT i FROM t").fetchall()[0][0] == "physical_plan"


def test_calls_behind_an_ai_predicate_say_so_and_stand_ins_are_forgotten(con, fake_engine) -> None:
    query = (f"SELECT ai_query('{CHAT}', r) FROM t "
             "WHERE ai_filter('is it about text 3?', r)")
    found = _explain(con, query)
    assert len(found) == 2 and all("upper bound" in r["note"] for r in found)
    # ai_filter asks its 36 distinct prompts; its stand-in lets every row pass, so the call
    # behind it counts all 90 rows with a text (a NULL text never passes a filter)
    assert [r["rows"] for r in found] == [36, 90]
    other = _explain(con, f"SELECT ai_query('{CHAT}', r) FROM t WHERE ai_query('{CHAT}', r) = 'x'")
    assert "depend on answers not known" in other[0]["note"]
    assert fake_engine.model_calls == 0
    # the filter's stand-in answers are not kept: the real statement asks the model
    before = con.sql(query).fetchall()
    fresh = connect(engine=fake_engine)
    fresh.sql(TABLE)
    assert fresh.sql(query).fetchall() == before


def test_a_price_gives_a_cost(fake_engine, tmp_path) -> None:
    from ai_query.catalog import Catalog

    data = {"endpoints": [{"name": "paid", "price": {"input_per_million": 2.0,
                                                      "output_per_million": 8.0},
                           "config": {"served_entities": [{"entity_name": CHAT}]}}]}
    catalog = Catalog.from_data(data)
    from ai_query.engine.backends.deterministic import DeterministicBackend
    from ai_query.engine.local import LocalEngine

    con = connect(engine=LocalEngine(catalog, backend_factory=DeterministicBackend))
    con.history = con._metered.history = UsageHistory(tmp_path / "h.json")
    [row] = _explain(con, "SELECT ai_query('paid', 'a b c', "
                          "modelParameters => named_struct('max_tokens', 10))")
    assert row["estimated_cost"] == pytest.approx((3 * 2.0 + 10 * 8.0) / 1e6)
    assert row["currency"] == "USD"


def test_large_inputs_are_counted_on_a_sample_within_the_stated_bound(con, monkeypatch) -> None:
    monkeypatch.setattr(explain, "COUNT_IN_FULL", 200)
    con.sql("CREATE TABLE big AS SELECT repeat('word ', (i % 97)::INT + 1) || i AS r "
            "FROM range(5000) x(i)")
    [row] = _explain(con, f"SELECT ai_query('{CHAT}', r) FROM big")
    exact = sum((i % 97) + 2 for i in range(5000))
    assert row["counted"] == "sample of 200" and row["to_send"] == 5000
    assert abs(row["prompt_tokens"] - exact) <= row["prompt_tokens_error"]
    assert abs(row["prompt_tokens"] - exact) / exact < 0.02


def test_a_100k_row_table_is_counted_on_a_sample_within_its_bound(con, fake_engine) -> None:
    """The default sample (20,000 of 100,000 distinct texts): the estimate is within its
    stated 95% bound and 2% of the exact count (the deterministic tokenizer counts words)."""
    con.sql("CREATE TABLE big AS SELECT 'Row ' || i || ': ' || repeat('word ', (i % 53)::INT) "
            "|| repeat('longer-word ', (i % 7)::INT) AS r FROM range(100000) x(i)")
    [row] = _explain(con, f"SELECT ai_query('{CHAT}', r) FROM big")
    exact = sum(2 + i % 53 + i % 7 for i in range(100_000))
    assert row["counted"] == f"sample of {explain.COUNT_IN_FULL}" and row["to_send"] == 100_000
    assert abs(row["prompt_tokens"] - exact) <= row["prompt_tokens_error"]
    assert abs(row["prompt_tokens"] - exact) / exact < 0.02
    assert fake_engine.model_calls == 0


def test_history_fits_prompt_and_output_costs(tmp_path) -> None:
    history = UsageHistory(tmp_path / "h.json")
    assert history.seconds(CHAT, 10, 100, 100) is None
    for p, c in ((1000, 100), (2000, 100), (1000, 300), (3000, 200)):
        history.add(CHAT, Spell(10, p, c, 0.001 * p + 0.05 * c))
    assert history.seconds(CHAT, 10, 1500, 150) == pytest.approx(1.5 + 7.5)
    assert UsageHistory(tmp_path / "h.json").output_per_request(CHAT, 100) == pytest.approx(17.5)


def test_history_scales_output_to_the_ceiling_and_fits_the_decoding_tail(tmp_path) -> None:
    history = UsageHistory(tmp_path / "h.json")
    # requests used 75% of their ceiling; time = 1 ms/prompt token + 20 ms/output token + the
    # tail: 50 ms per token of ceiling
    for n, p, ceiling in ((10, 1000, 8), (40, 2000, 32), (20, 3000, 16), (30, 1500, 24),
                          (5, 800, 64)):
        c = int(0.75 * ceiling * n)
        history.add(CHAT, Spell(n, p, c, 0.001 * p + 0.02 * c + 0.05 * ceiling, ceiling))
    assert history.output_per_request(CHAT, 40) == pytest.approx(30.0)
    assert history.seconds(CHAT, 10, 2500, 300, 40) == pytest.approx(2.5 + 6.0 + 2.0)


def test_computed_tokens_credit_whole_blocks_of_a_shared_prefix() -> None:
    from ai_query.udf.usage import PREFIX_BLOCK, computed_tokens

    instruction = "x" * 400  # 100 tokens at 4 characters a token: 3 whole blocks
    texts = [instruction + f" row {i:03d}" for i in range(10)]
    tokens = [102] * 10
    reused = 100 * 0 + 9 * (102 * 400 // 408 // PREFIX_BLOCK * PREFIX_BLOCK)
    assert computed_tokens(texts, tokens) == pytest.approx(10 * 102 - reused)
    # a short shared prefix (under a block) saves nothing
    assert computed_tokens(["Write about a", "Write about b"], [20, 20]) == 40


@pytest.mark.slow
def test_explain_through_a_script_and_the_cli_matches_what_the_model_reads(tmp_path) -> None:
    """A user's ``python file.py`` and ``ai-query sql``: EXPLAIN's prompt tokens (the real
    tokenizer) equal the tokens the real model then reports for the same distinct rows."""
    proc = run_script(tmp_path, f"""
        import json
        import ai_query
        con = ai_query.connect()
        con.sql("CREATE TABLE t AS SELECT 'Review ' || i || ': fine.' AS r FROM range(6) x(i)")
        q = ("SELECT ai_query('{CHAT}', r, modelParameters => named_struct('max_tokens', 1)) "
             "FROM t")
        [row] = con.sql("EXPLAIN " + q).to_arrow_table().to_pylist()
        con.sql(q).fetchall()
        print("RESULT", json.dumps([row["prompt_tokens"], con.progress.prompt_tokens]))
    """)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0
    counted, read = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT"))[7:])
    assert counted == read and counted > 6 * 30
    cli = subprocess.run(
        [EXE, "sql", "--read-dialect", "duckdb",
         f"EXPLAIN SELECT ai_query('{CHAT}', 'Review ' || i || ': fine.') FROM range(6) x(i)"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert cli.returncode == 0, cli.stderr
    assert str(counted) in cli.stdout and "exact" in cli.stdout
