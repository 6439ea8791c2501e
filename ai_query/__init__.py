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
    from ai_query.engine.core.protocol import Engine

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
        ``execute`` accept every Databricks ``ai_query`` call form. A failed row raises its own
        :class:`~ai_query.errors.RowError` from ``execute`` (``sql`` is lazy, as DuckDB's:
        fetch inside ``with con.errors():`` for the same), not DuckDB's wrapper of it.
    """
    from ai_query.udf.duckdb import connect as _connect

    return _connect(database, catalog, engine=engine, **duckdb_config)


def create_vector_index(
    con_or_spark: Any,
    name: str,
    source_table: str,
    primary_key: str,
    text_column: str,
    endpoint: str,
    *,
    path: str | None = None,
) -> Any:
    """Create or re-sync a vector index that ``vector_search(index => name, ...)`` searches.

    Embeds ``text_column`` of ``source_table`` with the embeddings ``endpoint`` into the table
    ``name`` (the source's columns plus the vectors); calling it again embeds only new or
    changed rows. ``con_or_spark``: a DuckDB connection (:func:`connect`'s, or a plain one;
    the index is a table) or a SparkSession (the index is Parquet in the warehouse directory,
    searched through ``SparkAIQuery.sql``; ``path`` moves it elsewhere).

    Returns:
        A ``SyncResult`` (rows in the index, rows embedded this time).

    Raises:
        ConfigError: a non-embeddings endpoint or a clashing index name.
    """
    if type(con_or_spark).__name__ == "SparkSession":
        from ai_query.udf.spark.vector_index import create_vector_index as _spark_create

        return _spark_create(
            con_or_spark, name, source_table, primary_key, text_column, endpoint, path=path
        )
    if path is not None:
        raise ConfigError("create_vector_index: path is for Spark (DuckDB keeps a table)")
    from ai_query.udf.vector_index import create_vector_index as _create

    return _create(con_or_spark, name, source_table, primary_key, text_column, endpoint)


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
    "create_vector_index",
    "load_catalog",
]
