"""Fixtures of the Spark tests: engine server processes and one local SparkSession, each
started once per test session (the real server takes ~1 minute to load both bundled models)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.udf.counting import CountingEngine


@pytest.fixture(scope="session")
def real_server() -> Iterator[Any]:
    """An engine server process with real vLLM and the bundled models, loaded before use."""
    from ai_query.engine.process.launcher import start_server_process

    server = start_server_process(engine="vllm", preload=True, startup_timeout=900)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def det_server() -> Iterator[Any]:
    """An engine server process with the deterministic backend (fast)."""
    from ai_query.engine.process.launcher import start_server_process

    server = start_server_process(engine="deterministic", preload=False)
    yield server
    server.stop(grace=5)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local[2] SparkSession (one per test process: Spark allows one context)."""
    from ai_query.udf.spark import local_session

    session = local_session("local[2]", app_name="ai-query-tests")
    yield session
    session.stop()


@pytest.fixture
def restore_batch_size(spark: Any) -> Iterator[None]:
    """Put Spark's Arrow batch size back after a test that changes it."""
    from ai_query.udf.spark import ARROW_BATCH_CONF

    before = spark.conf.get(ARROW_BATCH_CONF)
    yield
    spark.conf.set(ARROW_BATCH_CONF, before)


@pytest.fixture
def counting(fake_engine: Any) -> CountingEngine:
    """The deterministic engine, counting the rows and endpoints it is asked to answer."""
    return CountingEngine(fake_engine)
