"""Vector indexes over uploaded tables, so that ``vector_search`` works in the SQL editor.

An upload may ask for an index (``{"name", "key", "text", "endpoint"}``); it is built once, at
upload, into the table's own DuckDB file by :func:`ai_query.udf.vector_index.create_vector_index`
(the same code as ``ai_query.create_vector_index``), embedding the text column through the
server's Flight engine with the caller's token (so Flight checks ``CAN_QUERY`` on the embeddings
endpoint). Each query then sees the index as a read-only view (see
:func:`~ai_query.sql_workspace.locked.open_workspace`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ai_query.engine.flight.client import FlightEngineClient
from ai_query.errors import ConfigError, UploadRejectedError
from ai_query.sql_workspace.limits import WorkspaceLimits
from ai_query.sql_workspace.storage import STORED_TABLE
from ai_query.udf.vector_index import create_vector_index

_FIELDS = ("name", "key", "text", "endpoint")


@dataclass(frozen=True)
class IndexRequest:
    """The vector index an upload asks for."""

    name: str
    """The index's name (``vector_search(index => name, ...)``)."""
    key: str
    """The table's key column."""
    text: str
    """The column to embed."""
    endpoint: str
    """An embeddings endpoint."""

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> IndexRequest:
        """From the upload body's ``vector_index`` object.

        Raises:
            UploadRejectedError: not an object of four strings.
        """
        shape = 'vector_index must be {"name", "key", "text", "endpoint"} (strings)'
        if not isinstance(data, Mapping):
            raise UploadRejectedError(shape)
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise UploadRejectedError(f"{shape}; unknown: {', '.join(map(str, unknown))}")
        values = [data.get(f) for f in _FIELDS]
        if not all(isinstance(v, str) and v for v in values):
            raise UploadRejectedError(shape)
        return cls(*values)


def build_index(
    path: Path, request: IndexRequest, flight_url: str, token: str | None, limits: WorkspaceLimits
) -> None:
    """Build the index ``request`` into the converted upload at ``path`` (table ``t``).

    Raises:
        UploadRejectedError: no such columns, a key that is not unique, too many rows, or
            an endpoint that does not embed.
        AIQueryError: the engine's refusal (no ``CAN_QUERY`` on the endpoint, for one).
    """
    con = duckdb.connect(str(path), config={
        "memory_limit": f"{limits.memory_mb}MB", "threads": 1,
        "autoinstall_known_extensions": False, "autoload_known_extensions": False})
    engine = FlightEngineClient([flight_url], token=token or "")
    try:
        _check_table(con, request, limits)
        create_vector_index(con, request.name, STORED_TABLE, request.key, request.text,
                            request.endpoint, engine=engine)
    except (ConfigError, duckdb.Error) as exc:
        raise UploadRejectedError(
            f"vector index {request.name!r}: {' '.join(str(exc).split())[:300]}"
        ) from exc
    finally:
        con.close()
        engine.close()


def _check_table(
    con: duckdb.DuckDBPyConnection, request: IndexRequest, limits: WorkspaceLimits
) -> None:
    columns = [r[0] for r in con.execute(f"DESCRIBE {STORED_TABLE}").fetchall()]
    for role, column in (("key", request.key), ("text", request.text)):
        if column not in columns:
            raise UploadRejectedError(
                f"vector index {request.name!r}: the table has no {role} column {column!r} "
                f"(its columns: {', '.join(columns)})"
            )
    key = '"' + request.key.replace('"', '""') + '"'
    rows, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT {key}) FROM {STORED_TABLE}"
    ).fetchall()[0]
    if rows > limits.max_index_rows:
        raise UploadRejectedError(
            f"vector index {request.name!r}: the table has {rows} rows; an index may cover at "
            f"most {limits.max_index_rows}"
        )
    if distinct != rows:
        raise UploadRejectedError(
            f"vector index {request.name!r}: key column {request.key!r} must hold one distinct, "
            "non-NULL value per row"
        )
