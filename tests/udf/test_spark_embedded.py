"""The embedded engine server of local Spark, without Spark or a server process: what it is
asked to start (the Spark tests run it for real, see test_spark_behaviour.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ai_query.catalog import Catalog
from ai_query.engine.kinds import EngineKind

pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)


class _Started:
    """Stands in for the server process (the process boundary) and records how it was asked."""

    def __init__(self, catalog: Any, **options: Any) -> None:
        self.catalog = catalog
        self.options = options
        self.stopped = False

    def alive(self) -> bool:
        return not self.stopped

    def stop(self, grace: float = 60.0) -> None:
        self.stopped = True


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_Started]]:
    from ai_query.udf import spark as spark_udf

    calls: list[_Started] = []

    def start(catalog: Any, **options: Any) -> _Started:
        calls.append(_Started(catalog, **options))
        return calls[-1]

    monkeypatch.setattr(spark_udf, "start_server_process", start)
    yield calls
    spark_udf.stop_embedded_servers()


def test_the_embedded_server_starts_no_model_before_a_query_needs_it(
    started: list[_Started],
) -> None:
    """Preloading the whole catalog ran the embeddings engine beside the chat engine on the
    driver's cores during chat queries (issue 13: Spark at 0.72x of offline)."""
    from ai_query.udf.spark import embedded_server

    embedded_server(Catalog.default())
    assert len(started) == 1
    assert started[0].options["preload"] is False
    assert started[0].options["engine"] == EngineKind.VLLM


def test_one_embedded_server_per_catalog_and_engine(started: list[_Started]) -> None:
    from ai_query.udf.spark import embedded_server

    first = embedded_server(Catalog.default())
    assert embedded_server(Catalog.default()) is first
    embedded_server(Catalog.default(), "deterministic")
    assert [s.options["engine"] for s in started] == [EngineKind.VLLM, EngineKind.DETERMINISTIC]
