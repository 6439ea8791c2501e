"""Running jobs on real DuckDB with the deterministic backend: checkpoints, resume,
incremental runs, failed rows, outputs and the key rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

import ai_query
from ai_query.catalog import Catalog
from ai_query.engine.backends.backend import GenerationRequest, RowFailure
from ai_query.engine.backends.deterministic import DeterministicBackend
from ai_query.engine.local import LocalEngine
from ai_query.errors import JobError, JobLockedError, RowError
from ai_query.jobs.lock import JobLock
from ai_query.jobs.runlog import RunLog
from ai_query.jobs.runner import RunRequest, run_job
from ai_query.jobs.staging import Staging
from tests.jobs.helpers import CHAT, SQL, read_rows, reviews, write_reviews

LONG = "word " * 600  # over the deterministic backend's 512-token context: a row error


def _data(tmp_path: Path) -> Path:
    return tmp_path / "data" / "reviews.parquet"


def _errors(tmp_path: Path) -> list[dict[str, Any]]:
    return read_rows(tmp_path / "out" / "scored_errors")


def test_run_publishes_what_the_query_gives(tmp_path: Path, make_job: Any, det_engine: Any) -> None:
    write_reviews(_data(tmp_path), reviews(50))
    job = make_job()
    record = run_job(job, engine=det_engine)
    assert (record.status, record.kind, record.rows_processed, record.rows_ok) == (
        "succeeded",
        "full",
        50,
        50,
    )
    assert record.output_rows == 50 and record.rows_failed == 0
    con = ai_query.connect(engine=det_engine)
    con.execute(f"CREATE TABLE reviews AS SELECT * FROM '{_data(tmp_path)}'")
    expected = con.databricks_sql(SQL + " ORDER BY id").to_arrow_table().to_pylist()
    assert read_rows(tmp_path / "out" / "scored") == expected
    assert _errors(tmp_path) == []
    assert not (tmp_path / "out" / "scored.ai_query" / "staging").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "scored",
        "scored.ai_query",
        "scored_errors",
    ]


def test_interrupted_run_resumes_and_publishes_every_row_once(
    tmp_path: Path, make_job: Any, det_engine: Any
) -> None:
    write_reviews(_data(tmp_path), reviews(100))
    reference = make_job(output="ref/scored")
    run_job(reference, engine=det_engine)

    class Crash(Exception):
        pass

    class CrashAfterTwoBatches:
        commits = 0

        def planned(self, plan: Any) -> None: ...
        def answered(self, rows: int, pt: int, ct: int, rt: int = 0) -> None: ...

        def committed(self, rows: int) -> None:
            self.commits += 1
            if self.commits == 2:
                raise Crash("simulated crash")

    job = make_job()
    with pytest.raises(JobError, match="simulated crash"):
        run_job(job, engine=det_engine, observer=CrashAfterTwoBatches())
    assert not (tmp_path / "out" / "scored").exists()  # nothing published yet
    staged = Staging(Path(str(job.state_dir)) / "staging")
    staged.open(job.fingerprint(), "full")
    assert len(staged.batches()) == 2
    record = run_job(job, engine=det_engine)
    assert record.rows_processed == 100 - 32 and record.rows_skipped == 32
    assert record.rows_ok == 100  # the run's rows, resumed batches included
    assert read_rows(tmp_path / "out" / "scored") == read_rows(tmp_path / "ref" / "scored")
    log = RunLog(Path(str(job.state_dir)) / "runs.sqlite").recent()
    assert [r.status for r in log] == ["succeeded", "failed"] and log[0].run_id == log[1].run_id


def test_incremental_run_touches_only_new_and_changed_rows(
    tmp_path: Path, make_job: Any, det_engine: Any
) -> None:
    rows = [(i, f"text {i}") for i in range(60)]
    write_reviews(_data(tmp_path), rows)
    job = make_job(mode="incremental")
    first = run_job(job, engine=det_engine)
    assert first.kind == "full" and first.rows_processed == 60
    before = {r["id"]: r for r in read_rows(tmp_path / "out" / "scored")}
    calls = det_engine.model_calls
    changed = {3: "text 3 changed", 30: "text 30 changed", 59: "text 59 changed"}
    rows = [(i, changed.get(i, t)) for i, t in rows if i not in (10, 11)]  # delete 10, 11
    rows += [(100 + i, f"new {i}") for i in range(5)]
    write_reviews(_data(tmp_path), rows)
    second = run_job(job, engine=det_engine)
    assert (second.kind, second.rows_processed, second.rows_skipped) == ("incremental", 8, 55)
    assert det_engine.model_calls - calls == 8
    after = {r["id"]: r for r in read_rows(tmp_path / "out" / "scored")}
    assert sorted(after) == sorted(i for i, _ in rows)
    for key, row in after.items():
        if key in changed:
            assert row["review"] == changed[key] and changed[key] in row["sentiment"]["result"]
        elif key < 100:
            assert row == before[key]
    third = run_job(job, engine=det_engine)  # nothing changed: nothing runs, output kept
    assert third.rows_processed == 0 and det_engine.model_calls - calls == 8
    assert {r["id"]: r for r in read_rows(tmp_path / "out" / "scored")} == after


def test_unchanged_requests_in_changed_rows_come_from_the_cache(
    tmp_path: Path, make_job: Any, det_engine: Any
) -> None:
    write_reviews(_data(tmp_path), [(i, f"text {i}") for i in range(20)])
    job = make_job(
        mode="incremental",
        sql="SELECT id, ai_query('smollm2-135m-instruct', review) AS s, "
        "extra FROM (SELECT *, 1 AS extra FROM reviews)",
    )
    run_job(job, engine=det_engine)
    calls = det_engine.model_calls
    write_reviews(_data(tmp_path), [(i, f"text {i}") for i in range(20)] + [(99, "text 5")])
    record = run_job(job, engine=det_engine)
    assert record.rows_processed == 1 and record.cache_hits == 1 and det_engine.model_calls == calls


def test_sql_change_reruns_every_row(tmp_path: Path, make_job: Any, det_engine: Any) -> None:
    write_reviews(_data(tmp_path), reviews(20))
    run_job(make_job(mode="incremental"), engine=det_engine)
    other = make_job(mode="incremental", sql=SQL.replace("Sentiment of: ", "Mood of: "))
    record = run_job(other, engine=det_engine)
    assert record.kind == "full" and record.rows_processed == 20
    assert all(
        "Mood of" in r["sentiment"]["result"] for r in read_rows(tmp_path / "out" / "scored")
    )


_flaky_failed: set[str] = set()


class FlakyBackend(DeterministicBackend):
    """Fails each request containing 'flaky' the first time it sees it."""

    async def complete(self, text: str, request: GenerationRequest) -> Any:
        if "flaky" in text and text not in _flaky_failed:
            _flaky_failed.add(text)
            raise RowFailure("temporarily overloaded")
        return await super().complete(text, request)


def test_failed_rows_go_to_the_errors_table_and_are_retried(tmp_path: Path, make_job: Any) -> None:
    _flaky_failed.clear()
    engine = LocalEngine(Catalog.default(), backend_factory=FlakyBackend, memo_entries=0)
    rows = reviews(40)
    rows[5], rows[17], rows[33] = (5, "flaky one"), (17, "flaky two"), (33, LONG)
    write_reviews(_data(tmp_path), rows)
    job = make_job(mode="incremental")
    record = run_job(job, engine=engine)
    assert record.status == "succeeded" and record.rows_failed == 3 and record.rows_ok == 37
    errors = _errors(tmp_path)
    assert [e["id"] for e in errors] == [5, 17, 33]
    assert {e["endpoint"] for e in errors} == {CHAT} and {e["column"] for e in errors} == {
        "sentiment"
    }
    assert (
        "temporarily overloaded" in errors[0]["message"]
        and "maximum context" in errors[2]["message"]
    )
    assert all(e["failed_at"] is not None and e["run_id"] == record.run_id for e in errors)
    output = {r["id"]: r for r in read_rows(tmp_path / "out" / "scored")}
    assert output[5]["sentiment"] == {"result": None, "errorMessage": "temporarily overloaded"}
    calls = engine.model_calls
    retry = run_job(job, RunRequest(retry_failed=True), engine=engine)
    assert (retry.kind, retry.rows_processed, retry.rows_failed) == ("retry", 3, 1)
    assert engine.model_calls - calls == 3  # just the failed rows; errors are never cached
    assert [e["id"] for e in _errors(tmp_path)] == [33]
    fixed = {r["id"]: r for r in read_rows(tmp_path / "out" / "scored")}
    assert fixed[5]["sentiment"]["result"] and fixed[17]["sentiment"]["errorMessage"] is None
    assert all(fixed[k] == output[k] for k in output if k not in (5, 17))
    assert run_job(job, engine=engine).rows_processed == 0  # incremental: nothing new


def test_fail_on_error_true_fails_the_run_and_keeps_committed_batches(
    tmp_path: Path, make_job: Any, det_engine: Any
) -> None:
    rows = reviews(60)
    rows[40] = (40, LONG)
    write_reviews(_data(tmp_path), rows)
    job = make_job(sql="SELECT id, ai_query('smollm2-135m-instruct', review) AS s FROM reviews")
    with pytest.raises(
        JobError,
        match=rf"endpoint '{CHAT}' failed on row .*maximum context length.*2 committed batch",
    ) as failed:
        run_job(job, engine=det_engine)
    assert isinstance(failed.value.__cause__, RowError)  # ours, not DuckDB's wrapper
    assert "Python exception" not in str(failed.value)
    log = RunLog(Path(str(job.state_dir)) / "runs.sqlite").recent()
    assert log[0].status == "failed" and "maximum context" in (log[0].message or "")
    rows[40] = (40, "short again")
    write_reviews(_data(tmp_path), rows)
    record = run_job(job, engine=det_engine)
    assert record.rows_processed == 60 - 32
    assert [r["id"] for r in read_rows(tmp_path / "out" / "scored")] == list(range(60))


def test_lock_prevents_overlapping_runs(tmp_path: Path, make_job: Any, det_engine: Any) -> None:
    write_reviews(_data(tmp_path), reviews(5))
    job = make_job()
    with JobLock(Path(str(job.state_dir)) / "job.lock", job.name), pytest.raises(JobLockedError):
        run_job(job, engine=det_engine)
    assert det_engine.model_calls == 0
    assert run_job(job, engine=det_engine).status == "succeeded"


def test_no_cache_sends_every_request_to_the_model(
    tmp_path: Path, make_job: Any, det_engine: Any
) -> None:
    write_reviews(_data(tmp_path), [(i, f"t{i}") for i in range(10)])
    job = make_job()
    run_job(job, engine=det_engine)
    cached = run_job(job, engine=det_engine)
    assert cached.cache_hits == 10 and cached.cache_misses == 0 and det_engine.model_calls == 10
    run_job(job, RunRequest(use_cache=False), engine=det_engine)
    assert det_engine.model_calls == 20


def test_append_mode_adds_each_run(tmp_path: Path, make_job: Any, det_engine: Any) -> None:
    write_reviews(_data(tmp_path), reviews(10))
    job = make_job(mode="append")
    run_job(job, engine=det_engine)
    run_job(job, engine=det_engine)
    assert len(read_rows(tmp_path / "out" / "scored")) == 20
    with pytest.raises(JobError, match="retry-failed needs mode overwrite or incremental"):
        run_job(job, RunRequest(retry_failed=True), engine=det_engine)


def test_duckdb_tables_csv_lookup_and_a_two_column_key(
    tmp_path: Path, make_job: Any, det_engine: Any
) -> None:
    db = tmp_path / "db.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "CREATE TABLE items AS SELECT range % 3 AS shop, range AS item, "
            "'thing ' || range AS name FROM range(30)"
        )
    (tmp_path / "labels.csv").write_text("shop,label\n0,north\n1,south\n2,east\n")
    job = make_job(
        inputs={"items": {"table": "items"}, "labels": "labels.csv"},
        input="items",
        key=["shop", "item"],
        database="db.duckdb",
        output={"table": "described"},
        mode="incremental",
        sql="SELECT i.shop, i.item, l.label, ai_query('smollm2-135m-instruct', "
        "i.name || ' in ' || l.label, failOnError => false) AS d "
        "FROM items i JOIN labels l USING (shop)",
    )
    record = run_job(job, engine=det_engine)
    assert record.output_rows == 30
    with duckdb.connect(str(db)) as con:
        rows = con.sql("SELECT shop, item, label, d.result FROM described ORDER BY item").fetchall()
        assert rows[4] == (1, 4, "south", f"{CHAT} says: thing 4 in south")
        assert con.sql("SELECT count(*) FROM described_errors").fetchall() == [(0,)]
        con.execute("UPDATE items SET name = 'changed' WHERE item = 7")
    again = run_job(job, engine=det_engine)
    assert again.rows_processed == 1 and again.output_rows == 30


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        pytest.param(
            "SELECT review FROM reviews", r"must select the key column\(s\) \['id'\]", id="no-key"
        ),
        pytest.param(
            "SELECT r.id FROM reviews r, (VALUES (1), (2)) v(x)",
            "several rows for key",
            id="fan-out",
        ),
        pytest.param(
            "SELECT id + 1000 AS id FROM reviews", "is not a driving row", id="changed-key"
        ),
    ],
)
def test_key_rule_is_checked(
    tmp_path: Path, make_job: Any, det_engine: Any, sql: str, message: str
) -> None:
    write_reviews(_data(tmp_path), reviews(5))
    with pytest.raises(JobError, match=message):
        run_job(make_job(sql=sql), engine=det_engine)


def test_input_keys_must_be_unique_and_present(
    tmp_path: Path, make_job: Any, det_engine: Any
) -> None:
    write_reviews(_data(tmp_path), [(1, "a"), (1, "b")])
    with pytest.raises(JobError, match=r"key \['id'\] is not unique"):
        run_job(make_job(), engine=det_engine)
    with pytest.raises(JobError, match=r"key column\(s\) \['sku'\] not in input"):
        run_job(make_job(key=["sku"], sql="SELECT sku FROM reviews"), engine=det_engine)


def test_where_clause_may_drop_rows_and_empty_inputs_publish_empty_tables(
    tmp_path: Path, make_job: Any, det_engine: Any
) -> None:
    write_reviews(_data(tmp_path), reviews(30))
    job = make_job(sql=SQL + " WHERE id % 2 = 0", mode="incremental")
    assert run_job(job, engine=det_engine).output_rows == 15
    write_reviews(_data(tmp_path), [])
    record = run_job(job, engine=det_engine)
    assert record.output_rows == 0 and read_rows(tmp_path / "out" / "scored") == []
    published = json.loads((Path(str(job.state_dir)) / "published.json").read_text())
    assert published["kind"] == "incremental"
