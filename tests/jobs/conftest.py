"""Fixtures of the job tests: a job builder and a deterministic engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ai_query.jobs.spec import JobSpec, job_from_data
from tests.jobs.helpers import SQL


@pytest.fixture
def make_job(tmp_path: Path) -> Callable[..., JobSpec]:
    """Build a job in tmp_path: reviews input at data/reviews.parquet, output out/scored."""

    def build(**fields: Any) -> JobSpec:
        data: dict[str, Any] = {
            "name": "scored",
            "sql": SQL,
            "inputs": {"reviews": "data/reviews.parquet"},
            "key": ["id"],
            "output": "out/scored",
            "max_rows_per_batch": 16,
        }
        data.update(fields)
        return job_from_data(data, base_dir=tmp_path, source="job.toml")

    return build


@pytest.fixture
def det_engine() -> Any:
    """A deterministic LocalEngine without the in-memory memo (every request is a model call)."""
    from ai_query.catalog import Catalog
    from ai_query.engine.backends.deterministic import DeterministicBackend
    from ai_query.engine.local import LocalEngine

    return LocalEngine(Catalog.default(), backend_factory=DeterministicBackend, memo_entries=0)
