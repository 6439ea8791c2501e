"""Helpers of the job tests: input tables and reading outputs back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

CHAT = "smollm2-135m-instruct"
SQL = (
    "SELECT id, review, ai_query('smollm2-135m-instruct', concat('Sentiment of: ', review), "
    "failOnError => false) AS sentiment FROM reviews"
)


def write_reviews(path: Path, rows: list[tuple[int, str]]) -> None:
    """A Parquet file of (id, review) rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {"id": [r[0] for r in rows], "review": [r[1] for r in rows]},
        schema=pa.schema([("id", pa.int64()), ("review", pa.string())]),
    )
    pq.write_table(table, path)


def reviews(n: int, start: int = 0) -> list[tuple[int, str]]:
    """n review rows with a few repeated texts (duplicates across rows)."""
    moods = ["great", "bad", "fine", "awful", "lovely"]
    return [
        (i, f"review {i % 40}: the product was {moods[i % 5]}") for i in range(start, start + n)
    ]


def read_rows(path: Path, key: str = "id") -> list[dict[str, Any]]:
    """Every row of a Parquet directory, sorted by key."""
    if not path.exists():
        return []
    glob = str(path / "*.parquet")
    return (
        duckdb.sql(f"SELECT * FROM read_parquet('{glob}') ORDER BY {key}")
        .to_arrow_table()
        .to_pylist()
    )
