"""The run logs of every job file in a folder (what the web UI's Jobs page shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ai_query.errors import AIQueryError
from ai_query.jobs.runlog import RunLog, record_dict
from ai_query.jobs.spec import load_job

#: The job file endings :func:`~ai_query.jobs.spec.load_job` reads.
JOB_SUFFIXES = (".toml", ".yaml", ".yml")


def directory_runs(folder: Path, limit: int = 20) -> list[dict[str, Any]]:
    """Each job file in ``folder`` with its newest runs (a file that does not load: its error).

    Args:
        folder: the jobs directory.
        limit: most runs per job.
    """
    out: list[dict[str, Any]] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in JOB_SUFFIXES):
        try:
            job = load_job(path)
        except AIQueryError as exc:
            out.append({"file": path.name, "error": str(exc), "runs": []})
            continue
        runs: list[dict[str, Any]] = []
        log_path = Path(str(job.state_dir)) / "runs.sqlite"
        if log_path.exists():
            log = RunLog(log_path)
            try:
                runs = [record_dict(r) for r in log.recent(limit)]
            finally:
                log.close()
        out.append({"file": path.name, "job": job.name, "mode": job.mode,
                    "output": job.output.label, "schedule": job.schedule, "runs": runs})
    return out
