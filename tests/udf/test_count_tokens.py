"""ai_count_tokens(endpoint, text): the prompt tokens ai_query would read, with no model call."""

from __future__ import annotations

import json

import pytest

from ai_query.errors import UnknownEndpointError
from ai_query.udf.duckdb import connect
from tests.processes import run_script

CHAT = "smollm2-135m-instruct"


def test_counts_per_row_in_place_with_nulls_and_no_model_call(fake_engine) -> None:
    con = connect(engine=fake_engine)
    rows = con.sql(
        f"SELECT ai_count_tokens('{CHAT}', t) FROM (VALUES ('a b c'), (NULL), ('d e')) v(t)"
    ).fetchall()
    assert rows == [(3,), (None,), (2,)]
    assert fake_engine.model_calls == 0
    with pytest.raises(UnknownEndpointError), con.errors():
        con.sql("SELECT ai_count_tokens('nope', 'x')").fetchall()


@pytest.mark.slow
def test_a_users_script_counts_what_the_model_then_reads(tmp_path) -> None:
    """A plain ``python file.py``: ai_count_tokens over a table equals the prompt tokens the
    real model reports when ai_query then answers the same rows (chat template included)."""
    proc = run_script(tmp_path, f"""
        import json
        import ai_query
        con = ai_query.connect()
        con.sql("CREATE TABLE t AS SELECT * FROM (VALUES ('I love it'), ('It broke after "
                "a day, never again.'), (NULL)) v(r)")
        counted = con.sql("SELECT sum(ai_count_tokens('{CHAT}', r)) FROM t").fetchall()[0][0]
        before = con.progress.prompt_tokens
        con.sql("SELECT ai_query('{CHAT}', r, modelParameters => named_struct('max_tokens', 1)) "
                "FROM t").fetchall()
        print("RESULT", json.dumps([counted, con.progress.prompt_tokens - before]))
    """)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0
    counted, read = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT"))[7:])
    assert counted == read and counted > 40
