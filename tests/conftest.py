"""Shared fixtures. Real engines start once per test session (they take seconds to start)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_engine() -> Iterator[object]:
    """The in-process vLLM engine over the default catalog (bundled models).

    Its answer memo is off, so tests comparing answers really run the model each time.
    """
    from ai_query.catalog import Catalog
    from ai_query.engine.backends.registry import close_backends
    from ai_query.engine.local import LocalEngine

    engine = LocalEngine(Catalog.default(), memo_entries=0)
    yield engine
    close_backends()


@pytest.fixture
def fake_engine() -> object:
    """A LocalEngine over the default catalog with the deterministic backend."""
    from ai_query.catalog import Catalog
    from ai_query.engine.backends.deterministic import DeterministicBackend
    from ai_query.engine.local import LocalEngine

    return LocalEngine(Catalog.default(), backend_factory=DeterministicBackend)
