"""The run logs of a folder of job files (the web UI's Jobs page)."""

from __future__ import annotations

from pathlib import Path

from ai_query.jobs.directory import directory_runs
from ai_query.jobs.runlog import RunLog, RunRecord
from ai_query.jobs.spec import load_job
from tests.jobs.test_cli import JOB


def test_each_job_file_with_its_runs_or_its_error(tmp_path: Path) -> None:
    (tmp_path / "plain.toml").write_text(JOB)
    (tmp_path / "broken.yaml").write_text("name: broken\n")
    (tmp_path / "notes.txt").write_text("not a job")
    assert [j["runs"] for j in directory_runs(tmp_path)] == [[], []]
    job = load_job(tmp_path / "plain.toml")
    state = Path(str(job.state_dir))
    state.mkdir(parents=True, exist_ok=True)
    log = RunLog(state / "runs.sqlite")
    log.start(RunRecord(run_id="r1", job="plain", mode="incremental", status="succeeded",
                        rows_ok=3, rows_failed=1))
    log.close()
    broken, plain = directory_runs(tmp_path)
    assert broken["file"] == "broken.yaml" and "broken.yaml" in broken["error"]
    assert (plain["job"], plain["mode"], plain["schedule"]) == ("plain", "incremental",
                                                                "* * * * * *")
    assert [(r["run_id"], r["rows_ok"], r["rows_failed"]) for r in plain["runs"]] == [
        ("r1", 3, 1)]
