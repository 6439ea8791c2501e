"""The ``Engine`` protocol every caller (DuckDB and Spark UDFs, servers, jobs) talks to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

    from ai_query.catalog import Catalog
    from ai_query.engine.process.supervision import EngineHealth


@runtime_checkable
class Engine(Protocol):
    """Answers request batches; see :mod:`ai_query.engine.core.batch` for the columns.

    ``run`` must be thread-safe and return one result row per request row, in order.
    """

    catalog: Catalog
    """The endpoints this engine serves (for validation before rows run)."""

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Answer one request batch."""
        ...

    def close(self) -> None:
        """Release what this engine holds."""
        ...


@runtime_checkable
class SupervisedEngine(Protocol):
    """An engine whose models run in processes that can die (vLLM, engine servers)."""

    def endpoint_health(self) -> dict[str, EngineHealth]:
        """Each endpoint's health now (see :mod:`ai_query.engine.process.supervision`)."""
        ...


def engine_health(engine: Engine) -> dict[str, EngineHealth]:
    """Each endpoint's health; empty for an engine with nothing that can die."""
    if isinstance(engine, SupervisedEngine):
        return engine.endpoint_health()
    return {}


def wants_slices(engine: Engine) -> bool:
    """Whether callers should send ``engine`` a chunk as concurrent slices, so that rows are in
    flight together and progress moves (True, the default); an engine that answers at once
    with no model (EXPLAIN's recorder) says False with ``wants_slices = False``."""
    return bool(getattr(engine, "wants_slices", True))
