"""A budget set on the server (the catalog's ``budget``): it holds per principal for a Flight
client that sets none, and for HTTP callers, who get a 429 once it is spent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from ai_query.engine.flight.client import FlightEngineClient
from ai_query.udf.duckdb import connect
from tests.servers import free_port, start, stop, wait_http

CATALOG = {"endpoints": [{
    "name": "metered",
    "config": {"served_entities": [{"entity_name": "smollm2-135m-instruct"}]},
    "budget": {"max_tokens": 300, "key": "user", "renewal_period": "day"},
}]}
QUERY = ("SELECT i, ai_query('metered', '{word} ' || i || ' of the table', failOnError => false, "
         "modelParameters => named_struct('max_tokens', 10)) AS a FROM range(40) x(i) ORDER BY i")


def _run(url: str, token: str, word: str = "row") -> list[tuple[int, dict | None]]:
    client = FlightEngineClient(url, token=token, max_attempts=1)
    try:
        con = connect(engine=client)  # the client sets no budget of its own
        return con.sql(QUERY.format(word=word)).fetchall()
    finally:
        client.close()


def test_a_server_budget_holds_per_principal_over_flight_and_http(tmp_path: Path) -> None:
    (tmp_path / "catalog.json").write_text(json.dumps(CATALOG))
    (tmp_path / "tokens.json").write_text(json.dumps(
        {"tok-alice": {"principal": "alice"}, "tok-bob": {"principal": "bob"}}))
    flight_port, http_port = free_port(), free_port()
    proc = start([str(Path(sys.executable).with_name("ai-query")), "serve", "--engine",
                  "deterministic", "--catalog", str(tmp_path / "catalog.json"),
                  "--port", str(flight_port), "--http-port", str(http_port),
                  "--tokens-file", str(tmp_path / "tokens.json"),
                  "--database", str(tmp_path / "endpoints.sqlite")], tmp_path / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{http_port}/health", proc, timeout=120)
        url = f"grpc://127.0.0.1:{flight_port}"
        rows = _run(url, "tok-alice")
        assert [i for i, _ in rows] == list(range(40))
        answered = [a for _, a in rows if a["errorMessage"] is None]
        refused = [a for _, a in rows if a["errorMessage"] is not None]
        assert answered and refused
        assert all(a["result"] is None and a["errorMessage"].startswith(
            "budget reached: endpoint 'metered''s budget for user 'alice' per day allows "
            "max_tokens 300") for a in refused)
        # each answered row read 5 words and wrote 7 ("<model> says: row i of the table")
        assert 12 * len(answered) <= 300 < 12 * len(answered) + 15
        # bob has a budget of his own (other texts: answers in the server's memo cost nothing)
        bob = [a for _, a in _run(url, "tok-bob", "line") if a["errorMessage"] is None]
        assert len(bob) == len(answered)

        def ask(token: str) -> httpx.Response:
            return httpx.post(
                f"http://127.0.0.1:{http_port}/serving-endpoints/metered/invocations",
                headers={"Authorization": f"Bearer {token}"}, timeout=30,
                json={"messages": [{"role": "user", "content": "one two three four"}],
                      "max_tokens": 10})

        statuses = [ask("tok-alice").status_code for _ in range(5)]
        assert statuses[-1] == 429 and 429 in statuses
        answer = ask("tok-alice").json()
        assert answer["error_code"] == "RESOURCE_EXHAUSTED"
        assert "endpoint 'metered''s budget for user 'alice'" in answer["message"]
    finally:
        stop(proc)


def test_an_endpoint_budget_renews_each_period_and_may_be_shared() -> None:
    from ai_query.catalog import Endpoint
    from ai_query.errors import BudgetExceededError
    from ai_query.serving.budgets import EndpointBudgets

    now = [0.0]
    budgets = EndpointBudgets(clock=lambda: now[0])
    shared = Endpoint.model_validate({
        "name": "shared", "config": {"served_entities": [{"entity_name": "smollm2-135m-instruct"}]},
        "budget": {"max_tokens": 100, "key": "endpoint", "renewal_period": "hour"}})
    budgets.count(budgets.check(shared, "alice"), shared, 60, 40)
    with pytest.raises(BudgetExceededError, match="for all its callers per hour"):
        budgets.check(shared, "bob")  # everybody shares it: spent out
    now[0] = 3600.0  # a new hour: a new budget
    assert budgets.check(shared, "bob").tokens == 0
    free = shared.model_copy(update={"budget": None})
    assert budgets.check(free, "bob") is None
