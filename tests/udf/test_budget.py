"""Budgets in DuckDB: a query over its budget is refused before it starts; one that reaches it
stops sending, and the rows not sent carry the budget error in place."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ai_query.catalog import Catalog
from ai_query.engine.backends.deterministic import DeterministicBackend
from ai_query.engine.core.batch import request_batch
from ai_query.engine.core.budget import Allowance, Budget, BudgetedEngine
from ai_query.engine.local import LocalEngine
from ai_query.errors import BudgetExceededError, ConfigError, RowError, SQLError
from ai_query.options import CallOptions
from ai_query.udf.duckdb import connect
from ai_query.udf.usage import Spell, UsageHistory
from tests.processes import run_script

CHAT = "smollm2-135m-instruct"
EXE = shutil.which("ai-query", path=str(Path(sys.executable).parent)) or "ai-query"
#: 60 rows, 40 distinct texts of 4 words (the deterministic backend reads 4 tokens and answers
#: "<model> says: <text>", 6 tokens); every 10th row NULL.
TABLE = (
    "CREATE TABLE t AS SELECT i, CASE WHEN i % 10 = 9 THEN NULL ELSE 'text ' || (i % 40) || "
    "' words here' END AS r FROM range(60) x(i)"
)
LIMITED = "modelParameters => named_struct('max_tokens', 8)"


def _connect(engine, tmp_path, **kwargs):
    con = connect(engine=engine, **kwargs)
    con.history = con._metered.history = UsageHistory(tmp_path / "history.json")
    con.sql(TABLE)
    return con


def _counting_engine():
    return LocalEngine(Catalog.default(), backend_factory=DeterministicBackend, memo_entries=0)


def test_an_estimate_over_the_budget_is_refused_before_any_row_is_sent(tmp_path) -> None:
    engine = _counting_engine()
    con = _connect(engine, tmp_path)
    con.sql("SET VARIABLE ai_query_max_tokens = 300")
    query = f"SELECT ai_query('{CHAT}', r, {LIMITED}) FROM t"
    # 36 distinct texts x (4 prompt + 8 output ceiling, no history yet) = 432 tokens
    with pytest.raises(BudgetExceededError, match=r"432 tokens > max_tokens 300") as caught:
        con.sql(query)
    assert "144 prompt tokens + 288 output tokens at the max_tokens ceiling" in str(caught.value)
    assert engine.model_calls == 0
    con.sql("SET VARIABLE ai_query_max_tokens = 432")  # exactly the estimate: it runs
    assert len(con.sql(query).fetchall()) == 60
    assert con.spent.tokens == 36 * 10  # what the rows really used: 4 read + 6 generated


def test_a_query_that_reaches_its_budget_stops_sending_and_rows_keep_their_place(
    tmp_path,
) -> None:
    con = _connect(_counting_engine(), tmp_path)
    query = (f"SELECT i, ai_query('{CHAT}', r, failOnError => false, {LIMITED}) AS a "
             "FROM t ORDER BY i")
    unlimited = con.sql(query).fetchall()
    # a history that says answers are 1 token long: the estimate (36 x 5) is under 200, the
    # real answers (10 tokens a row) are not
    con.history.spells(CHAT).clear()
    history = UsageHistory(tmp_path / "optimistic.json")
    history.add(CHAT, Spell(100, 400, 100, 1.0))
    con.history = con._metered.history = history
    con.sql("SET VARIABLE ai_query_max_tokens = 200")
    limited = con.sql(query).fetchall()
    assert [i for i, _ in limited] == list(range(60))
    answered = [(i, a) for i, a in limited if a is not None and a["errorMessage"] is None]
    refused = [(i, a) for i, a in limited if a is not None and a["errorMessage"] is not None]
    assert answered and refused
    assert all(a["errorMessage"].startswith("budget reached: the query allows max_tokens 200")
               for _, a in refused)
    # the rows answered hold exactly what an unlimited run answers, in place
    assert all(a == unlimited[i][1] for i, a in answered)
    assert all(limited[i][1] is None for i in range(60) if i % 10 == 9)
    # never more than the budget: each distinct text answered cost 10 tokens
    distinct = {a["result"] for _, a in answered}
    assert con.spent.tokens == 10 * len(distinct) <= 200
    assert con.spent.tokens > 200 - 12  # it stopped only when the next row could not fit


def test_fail_on_error_makes_the_budget_the_query_error(tmp_path) -> None:
    con = _connect(_counting_engine(), tmp_path)
    con.sql("SET VARIABLE ai_query_max_tokens = 1000")
    con.history.add(CHAT, Spell(100, 400, 100, 1.0))
    with pytest.raises(RowError, match="budget reached"), con.errors():
        con.sql(f"SELECT ai_query('{CHAT}', r || ' and more words to read', "
                "modelParameters => named_struct('max_tokens', 400)) FROM t").fetchall()


def test_a_cost_budget_uses_the_catalog_price(tmp_path) -> None:
    data = {"endpoints": [{"name": "paid", "price": {"input_per_million": 2000.0,
                                                      "output_per_million": 8000.0},
                           "config": {"served_entities": [{"entity_name": CHAT}]}}]}
    engine = LocalEngine(Catalog.from_data(data), backend_factory=DeterministicBackend)
    con = _connect(engine, tmp_path, budget=Budget(max_cost=1.0))
    # 36 texts x (4 x 0.002 + 8 x 0.008) = 2.592 > 1.0
    with pytest.raises(BudgetExceededError, match=r"cost 2.592 > max_cost 1"):
        con.sql(f"SELECT ai_query('paid', r, {LIMITED}) FROM t")
    con.sql("SET VARIABLE ai_query_max_cost = 3")  # the session variable overrides
    con.sql(f"SELECT ai_query('paid', r, {LIMITED}) FROM t").fetchall()
    assert con.spent.cost == pytest.approx(36 * (4 * 0.002 + 6 * 0.008))


def test_a_bad_budget_variable_is_one_clear_error(tmp_path) -> None:
    con = _connect(_counting_engine(), tmp_path)
    con.sql("SET VARIABLE ai_query_max_tokens = -5")
    with pytest.raises(ConfigError, match=r"invalid budget \(ai_query_max_tokens = -5\)"):
        con.sql(f"SELECT ai_query('{CHAT}', r) FROM t")


def test_explain_of_a_write_leaves_nothing_written(tmp_path) -> None:
    con = _connect(_counting_engine(), tmp_path)
    [row] = con.sql(f"EXPLAIN CREATE TABLE out AS SELECT ai_query('{CHAT}', r) FROM t").fetchall()
    assert row[3] == 60
    assert con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'out'").fetchall() \
        == [(0,)]
    con.sql("BEGIN TRANSACTION")
    with pytest.raises(SQLError, match="open transaction"):
        con.sql(f"EXPLAIN CREATE TABLE out AS SELECT ai_query('{CHAT}', r) FROM t")
    assert con.sql(f"EXPLAIN SELECT ai_query('{CHAT}', r) FROM t").fetchall()[0][3] == 60
    con.sql("ROLLBACK")


def test_the_budgeted_engine_never_spends_past_its_budget_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    engine = _counting_engine()
    allowance = Allowance(Budget(max_tokens=500))
    budgeted = BudgetedEngine(engine, allowance)
    options = CallOptions.from_json(
        json.dumps({"endpoint": CHAT, "modelParameters": {"max_tokens": 8}}))
    batches = [request_batch([f"row {k} of batch {b}" for k in range(20)], options)
               for b in range(6)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(budgeted.run, batches))
    errors = [e for r in results for e in r.column("error").to_pylist()]
    used = sum(sum(r.column("prompt_tokens").to_pylist()) + sum(
        r.column("completion_tokens").to_pylist()) for r in results)
    assert used == allowance.tokens <= 500
    assert used > 500 - 13 and sum(e is not None for e in errors) == 120 - used // 12


@pytest.mark.slow
def test_budgets_through_a_script_and_the_cli_with_the_real_model(tmp_path) -> None:
    """A user's ``python file.py``: the real model stops at the budget mid-query (rows after
    the stop carry the budget error, the others are answers, in place); ``ai-query sql
    --max-tokens`` refuses a query over its budget before any model starts."""
    proc = run_script(tmp_path, f"""
        import json, os
        os.environ["AI_QUERY_USAGE_HISTORY"] = "history.json"  # this script's history only
        import ai_query
        from ai_query.errors import BudgetExceededError
        from pathlib import Path
        from ai_query.udf.usage import Spell, UsageHistory
        # a history in which answers used 4% of their max_tokens: EXPLAIN expects about 1
        # token an answer, far fewer than the model will write
        UsageHistory(Path("history.json")).add('{CHAT}', Spell(100, 4000, 100, 5.0, 24))
        con = ai_query.connect()
        q = ("SELECT i, ai_query('{CHAT}', 'Write a story about the number ' || i, "
             "failOnError => false, modelParameters => named_struct('max_tokens', 24)) AS a "
             "FROM range(24) x(i) ORDER BY i")
        [plan] = con.sql("EXPLAIN " + q).to_arrow_table().to_pylist()
        budget = plan["prompt_tokens"] + plan["expected_output_tokens"] + 100
        con.sql(f"SET VARIABLE ai_query_max_tokens = {{budget}}")
        rows = [(i, a["result"], a["errorMessage"]) for i, a in con.sql(q).fetchall()]
        con.sql("SET VARIABLE ai_query_max_tokens = 10")
        try:
            con.sql(q)
            refused = None
        except BudgetExceededError as exc:
            refused = str(exc)
        print("RESULT", json.dumps([budget, con.spent.tokens, rows, refused]))
    """)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0
    budget, spent, rows, refused = json.loads(
        next(x for x in out.splitlines() if x.startswith("RESULT"))[7:])
    assert [r[0] for r in rows] == list(range(24))
    answered = [r for r in rows if r[2] is None]
    stopped = [r for r in rows if r[2] is not None]
    assert answered and stopped and all(r[1] for r in answered)
    assert all(r[1] is None and r[2].startswith("budget reached") for r in stopped)
    assert spent <= budget
    assert refused is not None and "refused before it started" in refused
    cli = subprocess.run(
        [EXE, "sql", "--max-tokens", "50", "--read-dialect", "duckdb",
         f"SELECT ai_query('{CHAT}', 'Review ' || i || ': fine.') FROM range(6) x(i)"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert cli.returncode != 0
    assert "refused before it started" in cli.stderr and "> max_tokens 50" in cli.stderr
    assert "VLLM" not in cli.stderr  # no model started for a refused query


def test_rows_the_memo_answers_cost_nothing_counted_from_the_answers_alone(tmp_path) -> None:
    """A query with no budget limit counts its spend from the result batches' ``cached``
    column: no preview round trip before each slice is sent (the engine server sees only the
    data exchanges), and rows the server's memo answers cost nothing, nor enter the usage
    history's measured rows."""
    from ai_query.engine.flight.client import FlightEngineClient
    from ai_query.serving.flight import ServingFlightServer

    server = ServingFlightServer(
        LocalEngine(Catalog.default(), backend_factory=DeterministicBackend))
    client = FlightEngineClient(server.url)
    try:
        con = _connect(client, tmp_path)
        query = f"SELECT ai_query('{CHAT}', r, {LIMITED}) FROM t"
        assert len(con.sql(query).fetchall()) == 60
        assert con.spent.tokens == 36 * 10  # 36 distinct texts, 4 read + 6 generated each
        first = server.health()
        assert first["exchanges"] == first["batches"] > 0  # data exchanges only: no previews
        spells = con.history.spells(CHAT)
        assert spells[-1].requests == 36
        assert len(con.sql(query).fetchall()) == 60
        assert con.spent.tokens == 0  # every row from the server's memo
        assert server.health()["exchanges"] == 2 * first["exchanges"]
        assert con.history.spells(CHAT) == spells  # answered from the memo: nothing measured
        # a query that samples is never answered from the memo: it is paid again
        sampled = (f"SELECT ai_query('{CHAT}', r, modelParameters => "
                   "named_struct('temperature', 1.0, 'max_tokens', 8)) FROM t")
        con.sql(sampled).fetchall()
        assert con.spent.tokens == 54 * 10  # every non-NULL row
    finally:
        client.close()
        server.shutdown()


@pytest.mark.slow
def test_a_scripts_second_run_of_a_statement_costs_nothing_with_the_real_model(tmp_path) -> None:
    """A user's ``python file.py`` with no budget: the real engine server's memo answers the
    statement's second run, and ``con.spent`` counts it as nothing, from the answers alone."""
    proc = run_script(tmp_path, f"""
        import json, os
        os.environ["AI_QUERY_USAGE_HISTORY"] = "history.json"  # this script's history only
        import ai_query
        con = ai_query.connect()
        q = ("SELECT i, ai_query('{CHAT}', 'Name a colour, number ' || (i % 6), "
             "modelParameters => named_struct('max_tokens', 4)) AS a FROM range(12) x(i)")
        first = sorted(con.sql(q).fetchall())
        spent_first = con.spent.tokens
        second = sorted(con.sql(q).fetchall())
        print("RESULT", json.dumps([spent_first, con.spent.tokens, first == second]))
    """)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0
    spent_first, spent_second, same = json.loads(
        next(x for x in out.splitlines() if x.startswith("RESULT"))[7:])
    assert spent_first > 6 * 10  # 6 distinct prompts, each read (10+ tokens) once
    assert spent_second == 0 and same
