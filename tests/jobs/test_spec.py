"""The job file: TOML and YAML, validated with errors that name the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ai_query.errors import JobError
from ai_query.jobs.spec import load_job

TOML = """
name = "review_sentiment"
sql = "SELECT id, ai_query('smollm2-135m-instruct', review) AS s FROM reviews"
key = ["id"]
mode = "incremental"
schedule = "0 2 * * *"
max_rows_per_batch = 512

[inputs]
reviews = "data/reviews.parquet"

[output]
path = "out/scored"
"""

YAML = """
name: review_sentiment
sql_file: job.sql
key: id
inputs:
  reviews: {path: data/reviews.csv}
  labels: {table: labels}
input: reviews
database: db.duckdb
output: {table: scored}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_job_loads_with_paths_resolved(tmp_path: Path) -> None:
    job = load_job(_write(tmp_path, "job.toml", TOML))
    assert job.name == "review_sentiment" and job.mode == "incremental"
    assert job.inputs["reviews"].path == str(tmp_path / "data/reviews.parquet")
    assert job.inputs["reviews"].file_format == "parquet"
    assert job.output.path == str(tmp_path / "out/scored")
    assert job.state_dir == str(tmp_path / "out/scored.ai_query")
    assert job.driving_input == "reviews" and job.engine == "duckdb" and job.dialect == "databricks"
    assert job.max_rows_per_batch == 512 and job.cache


def test_yaml_job_with_sql_file_tables_and_a_database(tmp_path: Path) -> None:
    _write(tmp_path, "job.sql", "SELECT r.id, l.label FROM reviews r JOIN labels l USING (id)")
    job = load_job(_write(tmp_path, "job.yaml", YAML))
    assert job.key == ["id"] and job.query.startswith("SELECT r.id")
    assert job.inputs["reviews"].file_format == "csv" and job.inputs["labels"].table == "labels"
    assert job.output.table == "scored" and job.database == str(tmp_path / "db.duckdb")
    assert job.state_dir == str(tmp_path / "db.duckdb.ai_query" / "review_sentiment")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"key": None}, "key: Field required", id="key-missing"),
        pytest.param(
            {"mode": "upsert"},
            "mode: Input should be 'overwrite', 'append' or 'incremental'",
            id="mode",
        ),
        pytest.param(
            {"max_rows_per_batch": 0},
            "max_rows_per_batch: Input should be greater than or equal to 1",
            id="batch",
        ),
        pytest.param(
            {"schedule": "every day"},
            "schedule: cron expression 'every day' needs 5 fields",
            id="cron-fields",
        ),
        pytest.param({"schedule": "61 * * * *"}, "schedule: bad cron expression", id="cron-value"),
        pytest.param({"sql_file": "x.sql"}, "give exactly one of sql or sql_file", id="sql-twice"),
        pytest.param(
            {"output": {"path": "o", "format": "delta"}}, "delta needs engine = 'spark'", id="delta"
        ),
        pytest.param({"output": {"table": "t"}}, "need `database`", id="table-no-db"),
        pytest.param(
            {"engine": "spark", "output": {"table": "t"}},
            "output.table is for engine duckdb",
            id="spark-table-output",
        ),
        pytest.param(
            {"inputs": {"reviews": "a.parquet", "more": "b.parquet"}},
            "set `input`",
            id="two-inputs",
        ),
        pytest.param(
            {"inputs": {"reviews": {"path": "a", "table": "b"}}},
            "inputs.reviews: give exactly one",
            id="input-shape",
        ),
        pytest.param(
            {"colour": "red"}, "colour: Extra inputs are not permitted", id="unknown-field"
        ),
        pytest.param(
            {"sql": "SELECT 1 FROM other"},
            "sql: does not read the driving input 'reviews'",
            id="sql-input",
        ),
        pytest.param(
            {"sql": "SELECT id FROM reviews; SELECT 2"},
            "sql: must be exactly one SELECT",
            id="sql-two",
        ),
        pytest.param(
            {"sql": "SELECT id FROM reviews WHERE ("}, "sql: cannot parse", id="sql-parse"
        ),
        pytest.param({"key": ["id", "id"]}, "key: key columns repeat", id="key-repeat"),
    ],
)
def test_errors_name_the_field(make_job: Any, change: dict[str, object], message: str) -> None:
    fields = {k: v for k, v in change.items() if v is not None}
    if "key" in change and change["key"] is None:
        import ai_query.jobs.spec as spec

        data = {
            "name": "j",
            "sql": "SELECT id FROM reviews",
            "inputs": {"reviews": "r.parquet"},
            "output": "o",
        }
        with pytest.raises(JobError, match=message):
            spec.job_from_data(data, base_dir=Path("/tmp"), source="job.toml")
        return
    with pytest.raises(JobError, match=re.escape(message)):
        make_job(**fields)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="cannot read job file"):
        load_job(tmp_path / "missing.toml")
    with pytest.raises(JobError, match="does not parse"):
        load_job(_write(tmp_path, "bad.toml", "name = "))
    with pytest.raises(JobError, match=r"must end in \.toml"):
        load_job(_write(tmp_path, "job.json", "{}"))
    with pytest.raises(JobError, match="sql_file: cannot read"):
        load_job(_write(tmp_path, "j.yaml", YAML))


def test_fingerprint_follows_what_decides_answers(make_job: Any) -> None:
    base = make_job()
    assert base.fingerprint() == make_job(max_rows_per_batch=999, mode="append").fingerprint()
    assert base.fingerprint() != make_job(sql="SELECT id FROM reviews").fingerprint()
