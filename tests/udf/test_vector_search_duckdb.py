"""create_vector_index and vector_search in DuckDB on the deterministic engine (fast): exact
top-k against a brute-force numpy check, re-sync embeds only what changed (engine calls
counted), query vectors, and RAG with ai_query in one statement (LATERAL)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ai_query
from ai_query.errors import ConfigError, UnsupportedCallError
from tests.udf.counting import CountingEngine

EMBED = "all-minilm-l6-v2"


@pytest.fixture
def con(counting: CountingEngine) -> Any:
    c = ai_query.connect(engine=counting)  # type: ignore[arg-type]
    c.execute(
        "CREATE TABLE notes AS SELECT i AS id, 'note ' || i || ' about topic ' || (i % 7) "
        "AS body, i % 3 AS shelf FROM range(200) r(i)"
    )
    c.execute("INSERT INTO notes VALUES (999, NULL, 0)")
    yield c
    c.close()


def _vectors(engine: Any, texts: list[str]) -> np.ndarray:
    from ai_query.udf.vector_index import _embed

    return np.asarray(_embed(engine, EMBED, texts), dtype=np.float64)


def test_search_returns_the_k_nearest_in_order(con: Any, counting: CountingEngine) -> None:
    result = ai_query.create_vector_index(con, "notes_idx", "notes", "id", "body", EMBED)
    assert (result.rows, result.embedded) == (201, 200)  # the NULL text is not embedded
    rel = con.sql(
        "SELECT * FROM vector_search(index => 'notes_idx', query_text => 'note 5 about topic 5',"
        " num_results => 5)"
    )
    assert rel.columns == ["id", "body", "shelf", "search_score"]
    got = rel.fetchall()
    texts = con.sql("SELECT id, body FROM notes WHERE body IS NOT NULL ORDER BY id").fetchall()
    docs = _vectors(counting.engine, [b for _, b in texts])
    query = _vectors(counting.engine, ["note 5 about topic 5"])[0]
    scores = docs @ query / (np.linalg.norm(docs, axis=1) * np.linalg.norm(query))
    best = np.argsort(-scores, kind="stable")[:5]
    assert [r[0] for r in got] == [texts[i][0] for i in best]
    assert [r[3] for r in got] == pytest.approx([scores[i] for i in best], abs=1e-5)
    assert got[0][0] == 5  # the same text is its own nearest


def test_resync_embeds_only_new_and_changed_rows(con: Any, counting: CountingEngine) -> None:
    ai_query.create_vector_index(con, "notes_idx", "notes", "id", "body", EMBED)
    before = counting.rows
    again = ai_query.create_vector_index(con, "notes_idx", "notes", "id", "body", EMBED)
    assert again.embedded == 0 and counting.rows == before
    con.execute("UPDATE notes SET body = 'rewritten note' WHERE id IN (1, 2)")
    con.execute("UPDATE notes SET shelf = 9 WHERE id = 3")  # not the text: no new embedding
    con.execute("INSERT INTO notes VALUES (500, 'a brand new note', 1)")
    con.execute("DELETE FROM notes WHERE id = 4")
    synced = ai_query.create_vector_index(con, "notes_idx", "notes", "id", "body", EMBED)
    assert synced.embedded == 3 and counting.rows - before == 3
    assert synced.rows == 201
    top = con.sql(
        "SELECT id, shelf FROM vector_search(index => 'notes_idx', query_text => "
        "'rewritten note', num_results => 2)"
    ).fetchall()
    assert sorted(top) == [(1, 1), (2, 2)]
    assert con.sql("SELECT shelf FROM notes_idx WHERE id = 3").fetchall() == [(9,)]
    assert con.sql("SELECT count(*) FROM notes_idx WHERE id = 4").fetchall() == [(0,)]


def test_query_vector_and_positional_arguments(con: Any, counting: CountingEngine) -> None:
    ai_query.create_vector_index(con, "notes_idx", "notes", "id", "body", EMBED)
    vector = _vectors(counting.engine, ["note 9 about topic 2"])[0].tolist()
    by_vector = con.sql(
        "SELECT id FROM vector_search(index => 'notes_idx', query_vector => $v, "
        "num_results => 3)",
        params={"v": vector},
    ).fetchall()
    by_text = con.sql("SELECT id FROM vector_search('notes_idx', 'note 9 about topic 2', 3)")
    assert by_vector == by_text.fetchall() and by_vector[0] == (9,)


def test_rag_in_one_statement_with_lateral(con: Any) -> None:
    ai_query.create_vector_index(con, "notes_idx", "notes", "id", "body", EMBED)
    con.execute(
        "CREATE TABLE questions AS SELECT * FROM (VALUES ('note 3 about topic 3'), "
        "('note 10 about topic 3')) t(question)"
    )
    rows = con.sql(
        "SELECT q.question, count(*) AS n, ai_query('smollm2-135m-instruct', "
        "'Answer from these notes: ' || string_agg(r.body, ' | ') || ' Q: ' || q.question) AS a "
        "FROM questions q, LATERAL vector_search(index => 'notes_idx', query_text => q.question, "
        "num_results => 3) r GROUP BY q.question ORDER BY q.question"
    ).fetchall()
    assert [(q, n) for q, n, _ in rows] == [
        ("note 10 about topic 3", 3),
        ("note 3 about topic 3", 3),
    ]
    assert all(q in a for q, _, a in rows)  # the deterministic model echoes its prompt


def test_bad_searches_fail_before_rows_run(con: Any, counting: CountingEngine) -> None:
    ai_query.create_vector_index(con, "notes_idx", "notes", "id", "body", EMBED)
    before = counting.rows
    with pytest.raises(ConfigError, match="no vector index 'nope'"):
        con.sql("SELECT * FROM vector_search(index => 'nope', query_text => 'x', num_results => 1)")
    with pytest.raises(UnsupportedCallError, match="exactly one of"):
        con.sql(
            "SELECT * FROM vector_search(index => 'notes_idx', query_text => 'x', "
            "query_vector => [1.0], num_results => 1)"
        )
    with pytest.raises(UnsupportedCallError, match="num_results"):
        con.sql("SELECT * FROM vector_search(index => 'notes_idx', query_text => 'x', "
                "num_results => 0)")
    with pytest.raises(ConfigError, match="not an embeddings endpoint"):
        ai_query.create_vector_index(con, "i2", "notes", "id", "body", "smollm2-135m-instruct")
    with pytest.raises(ConfigError, match=r"indexes notes\.body"):
        ai_query.create_vector_index(con, "notes_idx", "notes", "id", "shelf", EMBED)
    assert counting.rows == before


def test_index_survives_a_new_connection(tmp_path: Any, counting: CountingEngine) -> None:
    path = str(tmp_path / "db.duckdb")
    with ai_query.connect(path, engine=counting) as c:  # type: ignore[arg-type]
        c.execute("CREATE TABLE notes AS SELECT i AS id, 'note ' || i AS body FROM range(10) r(i)")
        ai_query.create_vector_index(c, "notes_idx", "notes", "id", "body", EMBED)
    with ai_query.connect(path, engine=counting) as c:  # type: ignore[arg-type]
        rows = c.sql(
            "SELECT id FROM vector_search(index => 'notes_idx', query_text => 'note 4', "
            "num_results => 1)"
        ).fetchall()
    assert rows == [(4,)]

