"""The job files of a folder and their runs, as the web UI's Jobs page shows them: job files
only, errors without the file's contents, nothing outside the folder, run logs read-only."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_query.errors import JobError
from ai_query.jobs.directory import NOT_A_JOB, directory_runs
from ai_query.jobs.runlog import RunLog, RunRecord, read_runs
from ai_query.jobs.spec import load_job
from tests.jobs.test_cli import JOB

#: A tokens file (see ai_query.serving.auth): its keys are bearer tokens.
TOKENS: dict[str, Any] = {
    "dapi-ADMIN-7f3e9a": {"principal": "root", "groups": ["admins"]},
    "dapi-QUERY-1c2d3e": "bob@example.com",
}


def _log(state: Path, run_id: str) -> Path:
    """A run log with one succeeded run in ``state`` (WAL mode, closed as a run closes it)."""
    state.mkdir(parents=True, exist_ok=True)
    log = RunLog(state / "runs.sqlite")
    log.start(
        RunRecord(
            run_id=run_id, job="j", mode="incremental", status="succeeded", rows_ok=3, rows_failed=1
        )
    )
    log.close()
    return state / "runs.sqlite"


def _by_file(folder: Path) -> dict[str, dict[str, Any]]:
    return {e["file"]: e for e in directory_runs(folder)}


def test_each_job_file_with_its_runs_or_its_error(tmp_path: Path) -> None:
    (tmp_path / "plain.toml").write_text(JOB)
    (tmp_path / "broken.yaml").write_text("name: broken\n")
    (tmp_path / "notes.txt").write_text("not a job")
    assert [j["runs"] for j in directory_runs(tmp_path)] == [[], []]
    _log(Path(str(load_job(tmp_path / "plain.toml").state_dir)), "r1")
    broken, plain = directory_runs(tmp_path)
    assert broken == {
        "file": "broken.yaml",
        "runs": [],
        "error": (
            "field `inputs`: Field required; field `key`: Field required; "
            "field `output`: Field required"
        ),
    }
    assert (plain["job"], plain["mode"], plain["schedule"], plain["output"]) == (
        "plain",
        "incremental",
        "* * * * * *",
        "parquet out/plain",
    )
    assert [(r["run_id"], r["rows_ok"], r["rows_failed"]) for r in plain["runs"]] == [("r1", 3, 1)]


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_a_tokens_file_is_not_a_job_file_and_shows_nothing_of_itself(
    tmp_path: Path, suffix: str
) -> None:
    text = (
        yaml.safe_dump(TOKENS)
        if suffix == ".yaml"
        else "".join(
            f'"{t}" = "{p if isinstance(p, str) else p["principal"]}"\n' for t, p in TOKENS.items()
        )
    )
    (tmp_path / f"tokens{suffix}").write_text(text)
    entries = directory_runs(tmp_path)
    assert entries == [{"file": f"tokens{suffix}", "runs": [], "skipped": NOT_A_JOB}]
    body = json.dumps(entries)
    for token, entry in TOKENS.items():
        assert token not in body and json.dumps(entry) not in body
    assert "root" not in body and "bob@example.com" not in body


def test_a_broken_job_file_names_fields_and_rules_never_its_keys_or_values(
    tmp_path: Path,
) -> None:
    job = {
        "name": "leaky",
        "sql": "SELECT id FROM reviews",
        "key": ["id", "id"],
        "mode": "VALUE-mode-77",
        "dapi-EXTRA-KEY-1": "dapi-EXTRA-VALUE-1",
        "dapi-EXTRA-KEY-2": 2,
        "inputs": {"ok": "a.parquet", "weird name!": "b.parquet"},
        "output": {"path": "o", "colour": "SECRET-colour"},
    }
    (tmp_path / "leaky.yaml").write_text(yaml.safe_dump(job))
    error = _by_file(tmp_path)["leaky.yaml"]["error"]
    assert error.split("; ") == [
        "field `inputs`: input names must be plain SQL identifiers",
        "field `key`: key columns repeat",
        "field `mode`: Input should be 'overwrite', 'append' or 'incremental'",
        "unknown field(s): 2",
        "unknown field(s) in `output`: 1",
    ]
    for secret in ("dapi-EXTRA", "SECRET-colour", "VALUE-mode", "weird name", "colour", "leaky"):
        assert secret not in error
    # The job's owner, on the CLI, still reads every detail.
    with pytest.raises(JobError) as full:
        load_job(tmp_path / "leaky.yaml")
    assert "dapi-EXTRA-KEY-1" in str(full.value) and "'weird name!'" in str(full.value)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        pytest.param(
            {"inputs": {"reviews": {"path": "a", "table": "SECRET_t"}}},
            "field `inputs[1]`: give exactly one of path or table",
            id="input-shape",
        ),
        pytest.param(
            {"inputs": {"reviews": {"path": "a", "colour": "x"}}},
            "unknown field(s) in `inputs[1]`: 1",
            id="input-unknown",
        ),
        pytest.param(
            {"schedule": "SECRET every day"},
            "field `schedule`: not a cron expression (5 fields, or 6 with seconds first)",
            id="cron",
        ),
        pytest.param(
            {"output": {"table": "SECRET t"}, "database": "db.duckdb"},
            "field `output`: `table` must be a plain (schema.)table name",
            id="table",
        ),
        pytest.param({"input": "SECRET_in"}, "`input` is not one of `inputs`", id="input"),
        pytest.param({"key": [1]}, "field `key[1]`: Input should be a valid string", id="key"),
        pytest.param(
            {"sql": "SELECT SECRET_col FROM SECRET_table"},
            "sql: does not read the driving input",
            id="sql-input",
        ),
        pytest.param(
            {"sql": "SELECT id FROM reviews WHERE (SECRET"},
            "sql: does not parse (line 1, column ",
            id="sql-parse",
        ),
        pytest.param(
            {"sql": None, "sql_file": "SECRET.sql"}, "sql_file: cannot be read", id="sql-file"
        ),
    ],
)
def test_each_kind_of_error_in_the_schemas_terms(
    tmp_path: Path, fields: dict[str, Any], error: str
) -> None:
    job = {
        "name": "j",
        "sql": "SELECT id FROM reviews",
        "key": ["id"],
        "inputs": {"reviews": "r.parquet"},
        "output": "out",
        **fields,
    }
    (tmp_path / "j.yaml").write_text(yaml.safe_dump({k: v for k, v in job.items() if v}))
    shown = _by_file(tmp_path)["j.yaml"]["error"]
    assert shown.startswith(error) and "SECRET" not in shown


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        pytest.param(
            "bad.yaml", "dapi-SECRET-1: root\ndapi-SECRET-2: [bob\n", "YAML (line 3,", id="yaml"
        ),
        pytest.param(
            "bad.toml",
            '"dapi-SECRET-1" = "root"\n"dapi-SECRET-2" = bob\n',
            "TOML (line 2, column 19)",
            id="toml",
        ),
    ],
)
def test_a_file_that_does_not_parse_says_where_not_what(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    (tmp_path / name).write_text(text)
    shown = _by_file(tmp_path)[name]["error"]
    assert shown.startswith(f"does not parse as {where}") and "SECRET" not in shown
    with pytest.raises(JobError, match="does not parse"):  # the CLI: the parser's message
        load_job(tmp_path / name)


def _no_new_files(folder: Path, before: set[Path]) -> None:
    assert set(folder.rglob("*")) == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"state_dir": "../elsewhere"}, "state_dir", id="state-dir"),
        pytest.param({"state_dir": "link"}, "state_dir", id="state-dir-symlink"),
        pytest.param({"state_dir": "sub/../../elsewhere"}, "state_dir", id="dotdot"),
        pytest.param({"output": "../out"}, "output.path, state_dir", id="output"),
        pytest.param({"output": "."}, "state_dir", id="default-state-dir-beside-the-folder"),
        pytest.param({"cache_path": "../cache.sqlite"}, "cache_path", id="cache"),
        pytest.param({"inputs": {"reviews": "/etc/passwd"}}, "inputs[1].path", id="input"),
        pytest.param({"inputs": {"reviews": "../*/x.parquet"}}, "inputs[1].path", id="glob"),
        pytest.param({"database": "~/db.duckdb"}, "database", id="home"),
        pytest.param({"catalog": "../catalog.yaml"}, "catalog", id="catalog"),
        pytest.param({"sql": None, "sql_file": "../q.sql"}, "sql_file", id="sql-file"),
    ],
)
def test_a_job_naming_a_path_outside_the_folder_shows_an_error_and_opens_nothing(
    tmp_path: Path, fields: dict[str, Any], field: str
) -> None:
    other = _log(tmp_path / "elsewhere", "someone-elses-run")
    (tmp_path / "q.sql").write_text("SELECT id FROM reviews")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "link").symlink_to(tmp_path / "elsewhere")
    job = {
        "name": "j",
        "sql": "SELECT id FROM reviews",
        "key": ["id"],
        "inputs": {"reviews": "r.parquet"},
        "output": "out",
        **fields,
    }
    (jobs / "j.yaml").write_text(yaml.safe_dump({k: v for k, v in job.items() if v}))
    before = set(tmp_path.rglob("*"))
    stamp = other.stat().st_mtime_ns
    entry = _by_file(jobs)["j.yaml"]
    assert entry == {
        "file": "j.yaml",
        "runs": [],
        "error": (
            f"paths outside the jobs folder (the Jobs page opens nothing outside it): {field}"
        ),
    }
    _no_new_files(tmp_path, before)  # no -wal/-shm beside the other job's log
    assert other.stat().st_mtime_ns == stamp


def test_links_to_outside_the_folder_are_not_read(tmp_path: Path) -> None:
    other = _log(tmp_path / "elsewhere", "someone-elses-run")
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump(TOKENS))
    (jobs / "tokens.yaml").symlink_to(tmp_path / "tokens.yaml")
    (jobs / "plain.toml").write_text(JOB)
    state = Path(str(load_job(jobs / "plain.toml").state_dir))
    state.mkdir(parents=True)
    (state / "runs.sqlite").symlink_to(other)
    before = set(tmp_path.rglob("*"))
    entries = _by_file(jobs)
    assert entries["tokens.yaml"] == {
        "file": "tokens.yaml",
        "runs": [],
        "error": "a link to outside the jobs folder: not read",
    }
    assert entries["plain.toml"]["runs"] == []
    assert entries["plain.toml"]["error"] == (
        "the run log is a link to outside the jobs folder: not read"
    )
    assert "someone-elses-run" not in json.dumps(entries)
    _no_new_files(tmp_path, before)


def test_run_logs_are_read_without_writing_a_file(tmp_path: Path) -> None:
    (tmp_path / "plain.toml").write_text(JOB)
    log_path = _log(Path(str(load_job(tmp_path / "plain.toml").state_dir)), "r1")
    state = log_path.parent
    assert sorted(p.name for p in state.iterdir()) == ["runs.sqlite"]
    with log_path.open("rb") as f:
        assert f.read(20)[18:20] == b"\x02\x02"  # WAL mode, where mode=ro alone writes -shm
    stamp = log_path.stat().st_mtime_ns
    assert [r["run_id"] for r in _by_file(tmp_path)["plain.toml"]["runs"]] == ["r1"]
    assert sorted(p.name for p in state.iterdir()) == ["runs.sqlite"]
    assert log_path.stat().st_mtime_ns == stamp
    # While a run writes (its -wal and -shm exist), its newest row is read through them.
    writer = RunLog(log_path)
    try:
        writer.start(RunRecord(run_id="r2", job="plain", mode="incremental", started_at="9999"))
        assert sorted(p.name for p in state.iterdir()) == [
            "runs.sqlite",
            "runs.sqlite-shm",
            "runs.sqlite-wal",
        ]
        assert [r.run_id for r in read_runs(log_path)] == ["r2", "r1"]
    finally:
        writer.close()
    assert sorted(p.name for p in state.iterdir()) == ["runs.sqlite"]


def test_a_run_log_that_is_not_one_is_an_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "plain.toml").write_text(JOB)
    state = Path(str(load_job(tmp_path / "plain.toml").state_dir))
    state.mkdir(parents=True)
    (state / "runs.sqlite").write_text("dapi-SECRET not a database")
    entry = _by_file(tmp_path)["plain.toml"]
    assert (entry["job"], entry["runs"], entry["error"]) == (
        "plain",
        [],
        "the run log cannot be read",
    )


def test_files_that_are_not_job_files(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- dapi-SECRET\n")
    (tmp_path / "empty.yml").write_text("")
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"endpoints": {"dapi-SECRET": 1}}))
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe dapi-SECRET")
    (tmp_path / "dir.yaml").mkdir()
    entries = _by_file(tmp_path)
    assert sorted(entries) == ["binary.toml", "catalog.yaml", "empty.yml", "list.yaml"]
    assert {n: e.get("skipped") for n, e in entries.items()} == {
        "binary.toml": None,
        "catalog.yaml": NOT_A_JOB,
        "empty.yml": NOT_A_JOB,
        "list.yaml": NOT_A_JOB,
    }
    assert entries["binary.toml"]["error"] == "cannot be read as text"
    assert "SECRET" not in json.dumps(entries)
    assert not re.search(r"dapi|endpoints", json.dumps(entries))
