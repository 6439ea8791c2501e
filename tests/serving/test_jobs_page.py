"""The Jobs page through ``ai-query serve`` as users reach it: a tokens file inside the jobs
folder (both are YAML), a job whose ``state_dir`` points at another job's run log, and who may
see the page at all."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from ai_query.jobs.directory import NOT_A_JOB, directory_runs
from ai_query.jobs.runlog import RunLog, RunRecord
from ai_query.serving.auth import TokenAuth
from ai_query.serving.http import create_app
from ai_query.serving.options import ServeOptions
from tests.jobs.helpers import reviews, write_reviews
from tests.jobs.test_cli import JOB
from tests.serving.http_servers import HTTPServer

#: The server's tokens file, put in the jobs folder by mistake: an admin, a member of group
#: ``jobs``, and a token that may only query the bundled endpoints.
TOKENS: dict[str, Any] = {
    "dapi-ADMIN-0a9f31c7e2": {"principal": "root-of-the-server", "groups": ["admins"]},
    "dapi-JOBS-5be2d08f4a": {"principal": "ops-on-call", "groups": ["jobs"]},
    "dapi-QUERY-77c1e9b350": "query-only-user",
}
ADMIN, OPS, QUERY = TOKENS


@dataclass
class JobsServer:
    """The server and what its jobs folder and its neighbour hold."""

    server: HTTPServer
    jobs: Path
    """The ``--jobs-dir``."""
    other_state: Path
    """Another job's state folder, outside the jobs folder, with a real run log."""


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsServer]:
    root = tmp_path_factory.mktemp("jobs-page")
    # Another job, outside the jobs folder, run as its owner runs it: a real run log.
    other = root / "other"
    write_reviews(other / "data" / "reviews.parquet", reviews(4))
    (other / "plain.toml").write_text(JOB.replace('"plain"', '"someone_elses_job"'))
    done = subprocess.run(
        [sys.executable, "-m", "ai_query.cli", "jobs", "run", "plain.toml"],
        cwd=other,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    other_state = other / "out" / "plain.ai_query"
    assert (other_state / "runs.sqlite").is_file()

    jobs = root / "jobs"
    jobs.mkdir()
    (jobs / "tokens.yaml").write_text(yaml.safe_dump(TOKENS))
    (jobs / "plain.toml").write_text(JOB)
    log = RunLog(jobs / "out" / "plain.ai_query" / "runs.sqlite")
    log.start(
        RunRecord(
            run_id="run-in-the-folder",
            job="plain",
            mode="incremental",
            status="succeeded",
            rows_ok=5,
        )
    )
    log.close()
    (jobs / "peek.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "peek",
                "sql": "SELECT id FROM reviews",
                "key": ["id"],
                "inputs": {"reviews": "data/reviews.parquet"},
                "output": "out/peek",
                "state_dir": "../other/out/plain.ai_query",
            }
        )
    )
    server = HTTPServer(
        root / "server",
        "--engine",
        "deterministic",
        "--preload",
        "none",
        "--tokens-file",
        str(jobs / "tokens.yaml"),
        "--jobs-dir",
        str(jobs),
        "--database",
        str(root / "endpoints.sqlite"),
    ).start()
    try:
        yield JobsServer(server, jobs, other_state)
    finally:
        server.stop()


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_the_tokens_file_in_the_jobs_folder_shows_no_token(jobs_server: JobsServer) -> None:
    with jobs_server.server.client(ADMIN) as c:
        answer = c.get("/api/ui/jobs")
    assert answer.status_code == 200, answer.text
    for token, entry in TOKENS.items():
        assert token not in answer.text
        principal = entry if isinstance(entry, str) else entry["principal"]
        assert principal not in answer.text
    jobs = {j["file"]: j for j in answer.json()["jobs"]}
    assert jobs["tokens.yaml"] == {"file": "tokens.yaml", "runs": [], "skipped": NOT_A_JOB}


def test_a_state_dir_outside_the_folder_shows_an_error_and_none_of_its_runs(
    jobs_server: JobsServer,
) -> None:
    before = _listing(jobs_server.other_state)
    with jobs_server.server.client(ADMIN) as c:
        answer = c.get("/api/ui/jobs")
    assert answer.status_code == 200, answer.text
    jobs = {j["file"]: j for j in answer.json()["jobs"]}
    assert jobs["peek.yaml"] == {
        "file": "peek.yaml",
        "runs": [],
        "error": (
            "paths outside the jobs folder (the Jobs page opens nothing outside it): state_dir"
        ),
    }
    assert "someone_elses_job" not in answer.text
    assert _listing(jobs_server.other_state) == before  # no -wal/-shm, nothing touched
    assert [r["run_id"] for r in jobs["plain.toml"]["runs"]] == ["run-in-the-folder"]
    state = jobs_server.jobs / "out" / "plain.ai_query"
    assert sorted(p.name for p in state.iterdir()) == ["runs.sqlite"]  # read-only


def test_the_page_is_for_admins_and_group_jobs(jobs_server: JobsServer) -> None:
    with jobs_server.server.client(QUERY) as c:
        assert c.get("/api/2.0/serving-endpoints").json()["endpoints"]  # may query some
        refused = c.get("/api/ui/jobs")
        assert c.get("/api/ui/me").json()["jobs"] is False  # the nav link hides
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        "query-only-user may not see the Jobs page: it is for admins and members of group `jobs`"
    )
    for token in (ADMIN, OPS):
        with jobs_server.server.client(token) as c:
            assert c.get("/api/ui/me").json()["jobs"] is True
            assert "plain.toml" in c.get("/api/ui/jobs").text
    with jobs_server.server.client() as c:
        assert c.get("/api/ui/jobs").status_code == 401


def test_with_auth_off_the_local_user_sees_the_jobs(tmp_path: Path) -> None:
    (tmp_path / "plain.toml").write_text(JOB)
    options = ServeOptions(engine="deterministic", database=tmp_path / "endpoints.sqlite")
    app = create_app(options, auth=TokenAuth(), job_runs=partial(directory_runs, tmp_path))
    with TestClient(app) as c:
        assert c.get("/api/ui/me").json()["jobs"] is True
        assert [j["job"] for j in c.get("/api/ui/jobs").json()["jobs"]] == ["plain"]
