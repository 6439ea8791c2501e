"""The web UI's SQL editor engine: a DuckDB per query with ``ai_query`` ready, whose rows run on
the serving server's own engine through its Flight port with the caller's token.

It lives at the top of the package because it joins two layers that serving may not import
(:mod:`ai_query.udf.duckdb`) with the server (``ai-query serve`` hands it to the HTTP app).
Going through Flight means the server's own checks apply to every ``ai_query`` call:
``CAN_QUERY`` on the endpoint, and its rate limits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pyarrow as pa

from ai_query.engine.flight_client import FlightEngineClient


class DuckDBWorkspace:
    """Runs the SQL editor's queries on a fresh in-memory DuckDB each time."""

    def __init__(self, flight_url: str) -> None:
        self.flight_url = flight_url
        """The serving server's Flight address."""

    def run(
        self,
        sql: str,
        tables: Mapping[str, Path],
        token: str | None,
        progress: Callable[[int], None],
    ) -> pa.Table:
        """Load ``tables`` (name -> CSV/Parquet file), run ``sql``, return its result.

        Args:
            sql: DuckDB SQL with ``ai_query(...)`` and the task functions.
            tables: the caller's uploaded files, loaded as tables of those names.
            token: the caller's bearer token, sent with every batch to the Flight server.
            progress: called with the number of rows answered after each chunk.
        """
        from ai_query.udf.duckdb import connect, register

        engine = FlightEngineClient([self.flight_url], token=token or "")
        try:
            with connect(":memory:", engine=engine) as con:
                # Registered again with the caller's progress (the same macro name replaces it).
                register(con.raw, engine=engine, progress=lambda rows, *_: progress(rows))
                for name, path in tables.items():
                    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv_auto"
                    con.raw.execute(
                        f'CREATE TABLE "{name}" AS SELECT * FROM {reader}(?)', [str(path)]
                    )
                return con.sql(sql).fetch_arrow_table()
        finally:
            engine.close()  # one client per query: its Flight connections go with it
