"""Vector indexes over DuckDB tables: :func:`create_vector_index` embeds a table's text column
into an index table next to the data, and re-syncs it embedding only new or changed rows.

The index table ``<name>`` holds the source's columns, ``__text_md5`` (the hash of the text it
embedded) and ``__embedding FLOAT[dims]``; the registry table ``ai_query_vector_indexes``
remembers each index's source, key, text column, endpoint and dimensions, so a later
connection to the same database can search it (:func:`load_indexes`). The connection is used
through its own methods (``execute``, ``sql``, ``register``), so this module needs no DuckDB
import of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlglot import exp

from ai_query.catalog import Catalog
from ai_query.engine.core.batch import align_results, raise_first_error, request_batch
from ai_query.engine.core.protocol import Engine
from ai_query.engine.spec import EngineSpec, get_engine
from ai_query.errors import ConfigError
from ai_query.options import CallOptions
from ai_query.sql.vector_search import (
    EMBEDDING_COLUMN,
    HASH_COLUMN,
    INDEX_REGISTRY,
    VectorIndexInfo,
)
from ai_query.tasks import Task

#: Texts per engine request batch while embedding.
EMBED_BATCH = 1024
#: The columns of the registry table (:data:`INDEX_REGISTRY`), as DuckDB DDL.
REGISTRY_COLUMNS = (
    "name VARCHAR PRIMARY KEY, source_table VARCHAR, primary_key VARCHAR, text_column VARCHAR, "
    "endpoint VARCHAR, dims INTEGER"
)


@dataclass(frozen=True)
class SyncResult:
    """What a (re-)sync did."""

    rows: int
    """Rows in the index."""
    embedded: int
    """Rows embedded this time (new or changed text)."""


def _q(name: str) -> str:
    return exp.to_identifier(name).sql("duckdb")


def _table(name: str) -> str:
    return exp.to_table(name).sql("duckdb")


def load_indexes(con: Any) -> dict[str, VectorIndexInfo]:
    """The vector indexes recorded in ``con``'s database (none without a registry)."""
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
        "AND table_schema = current_schema() AND table_catalog = current_database()",
        [INDEX_REGISTRY],
    ).fetchone()
    if not found or not found[0]:
        return {}
    rows = con.execute(
        f"SELECT name, source_table, primary_key, text_column, endpoint, dims FROM {INDEX_REGISTRY}"
    ).fetchall()
    return {
        r[0]: VectorIndexInfo(
            name=r[0], source_table=r[1], primary_key=r[2], text_column=r[3], endpoint=r[4],
            dims=int(r[5]),
        )
        for r in rows
    }


def create_vector_index(
    con: Any,
    name: str,
    source_table: str,
    primary_key: str,
    text_column: str,
    endpoint: str,
    *,
    engine: Engine | None = None,
) -> SyncResult:
    """Create or re-sync the vector index ``name`` over ``source_table`` (DuckDB).

    Rows whose text is new or changed since the last sync are embedded (NULL text: no vector,
    never found); rows gone from the source leave the index; other columns are copied afresh.

    Args:
        con: an :func:`ai_query.connect` connection (its engine embeds), or a plain DuckDB one.
        name: the index (and its table).
        source_table: the table to index.
        primary_key: its key column.
        text_column: the column to embed.
        endpoint: an embeddings endpoint of the catalog.
        engine: the engine to embed with (default: the connection's, else the shared one).

    Raises:
        ConfigError: an endpoint that does not embed, or an index of that name built over
            another table, key or column.
    """
    raw = getattr(con, "raw", con)
    engine = engine or getattr(con, "engine", None) or get_engine(EngineSpec.for_catalog(None))
    catalog: Catalog = engine.catalog
    if catalog.task_of(endpoint) != Task.EMBEDDINGS:
        raise ConfigError(f"create_vector_index: {endpoint!r} is not an embeddings endpoint")
    raw.execute(f"CREATE TABLE IF NOT EXISTS {INDEX_REGISTRY} ({REGISTRY_COLUMNS})")
    old = load_indexes(raw).get(name)
    if old is not None and (old.source_table, old.primary_key, old.text_column) != (
        source_table, primary_key, text_column
    ):
        raise ConfigError(
            f"create_vector_index: {name!r} indexes {old.source_table}.{old.text_column}; "
            "drop it (DROP TABLE and its registry row) or pick another name"
        )
    if old is not None and old.endpoint != endpoint:
        old = None  # another model: every row is embedded again
    src, key, text, idx = _table(source_table), _q(primary_key), _q(text_column), _table(name)
    if old is None:
        todo = raw.execute(
            f"SELECT {key}, {text} FROM {src} WHERE {text} IS NOT NULL"
        ).fetchall()
    else:
        todo = raw.execute(
            f"SELECT s.{key}, s.{text} FROM {src} s LEFT JOIN {idx} i ON s.{key} = i.{key} "
            f"WHERE s.{text} IS NOT NULL AND (i.{key} IS NULL OR "
            f"i.{HASH_COLUMN} IS DISTINCT FROM md5(s.{text}))"
        ).fetchall()
    vectors = _embed(engine, endpoint, [str(t) for _, t in todo])
    dims = len(vectors[0]) if vectors else (old.dims if old else 0)
    if not dims:  # nothing to embed yet: ask once for the dimensions
        dims = len(_embed(engine, endpoint, ["dimensions"])[0])
    fresh = pa.table(
        {"k": pa.array([k for k, _ in todo]), "v": pa.array(vectors, pa.list_(pa.float32()))}
    )
    staging = f"__ai_query_vectors_{abs(hash(name))}"
    raw.register(staging, fresh)
    try:
        keep = (
            f"LEFT JOIN {idx} o ON s.{key} = o.{key} AND o.{HASH_COLUMN} = md5(s.{text})"
            if old is not None else ""
        )
        kept = f"o.{EMBEDDING_COLUMN}" if old is not None else "NULL"
        new_table = _table(f"{name}__building")
        raw.execute("BEGIN TRANSACTION")
        raw.execute(
            f"CREATE OR REPLACE TABLE {new_table} AS SELECT s.*, md5(s.{text}) AS {HASH_COLUMN}, "
            f"CAST(COALESCE(CAST(n.v AS FLOAT[]), {kept}) AS FLOAT[{dims}]) AS {EMBEDDING_COLUMN} "
            f"FROM {src} s LEFT JOIN {staging} n ON s.{key} = n.k {keep}"
        )
        raw.execute(f"DROP TABLE IF EXISTS {idx}")
        raw.execute(f"ALTER TABLE {new_table} RENAME TO {_q(exp.to_table(name).name)}")
        raw.execute(
            f"INSERT OR REPLACE INTO {INDEX_REGISTRY} VALUES (?, ?, ?, ?, ?, ?)",
            [name, source_table, primary_key, text_column, endpoint, dims],
        )
        raw.execute("COMMIT")
    except Exception:
        raw.execute("ROLLBACK")
        raise
    finally:
        raw.unregister(staging)
    rows = raw.execute(f"SELECT count(*) FROM {idx}").fetchone()[0]
    return SyncResult(rows=int(rows), embedded=len(todo))


def _embed(engine: Engine, endpoint: str, texts: list[str]) -> list[list[float]]:
    out: list[list[float]] = []
    options = CallOptions(endpoint=endpoint)
    for start in range(0, len(texts), EMBED_BATCH):
        chunk = texts[start : start + EMBED_BATCH]
        result = align_results(engine.run(request_batch(chunk, options)), len(chunk))
        raise_first_error(result, endpoint, start)
        out += result.column("result").to_pylist()
    return out
