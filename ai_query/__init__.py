"""ai_query: call chat and embedding models from SQL over whole tables.

``SELECT ai_query('smollm2-135m-instruct', prompt) FROM t`` in DuckDB or Spark, with Databricks'
semantics, on a vLLM engine. This module is the public API; heavy backends (vLLM, torch, DuckDB,
Spark) load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ai_query.catalog import Catalog, Endpoint, load_catalog
from ai_query.errors import (
    AIQueryError,
    ConfigError,
    EngineDeadError,
    EngineError,
    EngineUnavailableError,
    JobError,
    ModelNotAvailableError,
    RowAlignmentError,
    RowError,
    SQLError,
    SQLParseError,
    UnknownEndpointError,
    UnsupportedCallError,
)
from ai_query.options import CallOptions, ModelParameters

if TYPE_CHECKING:
    from ai_query.engine.protocol import Engine

__version__ = "0.1.0"


def connect(
    database: str = ":memory:",
    catalog: Catalog | str | None = None,
    *,
    engine: Engine | None = None,
    **duckdb_config: Any,
) -> Any:
    """A DuckDB connection with ``ai_query`` ready (the embedded default).

    Args:
        database: DuckDB database path, or ``:memory:``.
        catalog: endpoint catalog (object or file path); default: the bundled endpoints.
        engine: engine to run rows on; default: vLLM in a private engine server process.
        **duckdb_config: passed to ``duckdb.connect``.

    Returns:
        An :class:`ai_query.udf.duckdb.AIQueryConnection`: a DuckDB connection whose ``sql`` and
        ``execute`` accept every Databricks ``ai_query`` call form.
    """
    from ai_query.udf.duckdb import connect as _connect

    return _connect(database, catalog, engine=engine, **duckdb_config)


__all__ = [
    "AIQueryError",
    "CallOptions",
    "Catalog",
    "ConfigError",
    "Endpoint",
    "EngineDeadError",
    "EngineError",
    "EngineUnavailableError",
    "JobError",
    "ModelNotAvailableError",
    "ModelParameters",
    "RowAlignmentError",
    "RowError",
    "SQLError",
    "SQLParseError",
    "UnknownEndpointError",
    "UnsupportedCallError",
    "__version__",
    "connect",
    "load_catalog",
]
