"""Staging (checkpoints) and publishing: commit markers, resume, atomic swaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

import ai_query.jobs.outputs as outputs
from ai_query.jobs.outputs import DuckDBTableOutput, ParquetDirOutput, swap_directory
from ai_query.jobs.staging import Staging


def _writer(text: str):
    return lambda p: p.write_text(text)


def test_commit_resume_and_orphans(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    assert staging.open("job-a", "full") is False
    run_id = staging.run_id
    for i in range(2):
        staging.commit(
            staging.next_batch(),
            {"out": _writer(f"o{i}"), "err": _writer(""), "keys": _writer("k")},
        )
    # A batch killed half-way: its output is there, its keys file (the commit point) is not.
    orphan = staging.next_batch()
    orphan.output.write_text("half")
    (tmp_path / "staging" / "batch-000004.keys.parquet.tmp").write_text("tmp")
    again = Staging(tmp_path / "staging")
    assert again.open("job-a", "full") is True and again.run_id == run_id
    assert [b.number for b in again.batches()] == [1, 2]
    assert not orphan.output.exists()
    assert not list((tmp_path / "staging").glob("*.tmp"))
    assert again.next_batch().number == 3


@pytest.mark.parametrize(("job", "kind"), [("job-b", "full"), ("job-a", "incremental")])
def test_staging_of_another_job_definition_or_kind_is_discarded(
    tmp_path: Path, job: str, kind: str
) -> None:
    staging = Staging(tmp_path / "s")
    staging.open("job-a", "full")
    staging.commit(
        staging.next_batch(), {"out": _writer("o"), "err": _writer(""), "keys": _writer("k")}
    )
    again = Staging(tmp_path / "s")
    assert again.open(job, kind) is False and again.batches() == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_swap_directory_replaces_whole_directories(
    tmp_path: Path, monkeypatch: Any, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    target = tmp_path / "out"
    first = tmp_path / "new1"
    first.mkdir()
    (first / "part-a.parquet").write_text("1")
    swap_directory(first, target)  # no target yet: a plain rename
    second = tmp_path / "new2"
    second.mkdir()
    (second / "part-b.parquet").write_text("2")
    swap_directory(second, target)
    assert sorted(p.name for p in target.iterdir()) == ["part-b.parquet"]
    assert not second.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_parquet_output_replace_and_idempotent_append(tmp_path: Path) -> None:
    con = duckdb.connect()
    out = ParquetDirOutput(tmp_path / "out")
    assert not out.exists()
    out.replace(con, "SELECT range AS id FROM range(3)", "run1")
    assert con.sql(f"SELECT count(*) FROM {out.relation()}").fetchall() == [(3,)]
    out.append(con, "SELECT 10 AS id", "run2")
    out.append(con, "SELECT 10 AS id", "run2")  # a resumed run publishing again: same file
    assert con.sql(f"SELECT count(*) FROM {out.relation()}").fetchall() == [(4,)]
    out.replace(con, f"SELECT * FROM {out.relation()} WHERE id > 0", "run3")  # reads the old one
    assert con.sql(f"SELECT list_sort(list(id)) FROM {out.relation()}").fetchall() == [
        ([1, 2, 10],)
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_duckdb_table_output(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "db.duckdb"))
    out = DuckDBTableOutput("scored")
    assert not out.exists(con)
    out.replace(con, "SELECT range AS id FROM range(3)", "r1")
    out.append(con, "SELECT 7 AS id", "r2")
    out.append(con, "SELECT 7 AS id", "r2")
    assert con.sql("SELECT count(*) FROM scored").fetchall() == [(4,)]
    out.replace(con, "SELECT * FROM scored WHERE id <> 7", "r3")
    assert con.sql("SELECT count(*) FROM scored").fetchall() == [(3,)]
    with pytest.raises(duckdb.Error):
        out.replace(con, "SELECT * FROM missing_table", "r4")
    assert con.sql("SELECT count(*) FROM scored").fetchall() == [(3,)]  # rolled back
