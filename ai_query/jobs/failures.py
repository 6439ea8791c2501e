"""Failed rows: found in a batch's output, kept in the errors table beside the output.

Under ``failOnError => false`` an ``ai_query`` column is ``STRUCT<result, errorMessage>``; a
row whose ``errorMessage`` is set failed. Every such top-level output column is checked after
each batch, and its failed rows become rows of the errors table:

==========  ==========  ================================================
column      type        meaning
==========  ==========  ================================================
<key...>    as input    the driving row's key
column      VARCHAR     the output column holding the error
endpoint    VARCHAR     the endpoint the column's ai_query call named
message     VARCHAR     the errorMessage
failed_at   TIMESTAMP   when the batch ran
run_id      VARCHAR     the run that produced it
==========  ==========  ================================================

Keep the error struct in the job's output (select it whole, not only ``.result``) for failed
rows to be tracked and retried.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ai_query.jobs.outputs import sql_ident, sql_string

ERROR_FIELDS = ("result", "errorMessage")


def error_struct_columns(schema: pa.Schema) -> list[str]:
    """Top-level columns shaped like ``STRUCT<result, errorMessage>``."""
    found = []
    for field in schema:
        if pa.types.is_struct(field.type):
            names = [field.type.field(i).name for i in range(field.type.num_fields)]
            if names == list(ERROR_FIELDS):
                found.append(field.name)
    return found


def column_endpoints(sql: str, dialect: str) -> dict[str, str]:
    """Output column name -> endpoint, for top-level ``ai_query(..., failOnError => false)``
    projections; when the query has one such endpoint, ``""`` maps to it as a fallback."""
    from sqlglot import exp

    from ai_query.sql.calls import find_calls
    from ai_query.sql.transpile import parse_sql

    tree = parse_sql(sql, dialect)[0]
    mapping: dict[str, str] = {}
    if isinstance(tree, exp.Query):
        for projection in tree.selects:
            calls = [c for c in find_calls(projection) if not c.fail_on_error]
            if len({c.endpoint for c in calls}) == 1 and projection.alias_or_name:
                mapping[projection.alias_or_name] = calls[0].endpoint
    every = {c.endpoint for c in find_calls(tree) if not c.fail_on_error}
    if len(every) == 1:
        mapping[""] = every.pop()
    return mapping


def batch_errors_sql(
    table: str,
    key: list[str],
    columns: list[str],
    endpoints: dict[str, str],
    run_id: str,
    key_types: dict[str, str],
) -> str:
    """SQL selecting a batch's failed rows from ``table`` (which has key columns and
    ``__aiq_fp``), shaped as the errors table plus ``__aiq_fp``."""
    keys = ", ".join(sql_ident(k) for k in key)
    parts = []
    for column in columns:
        endpoint = endpoints.get(column, endpoints.get("", ""))
        ref = sql_ident(column)
        parts.append(
            f'SELECT {keys}, __aiq_fp, {sql_string(column)} AS "column", '
            f"{sql_string(endpoint)} AS endpoint, {ref}.errorMessage AS message, "
            f"now()::TIMESTAMP AS failed_at, {sql_string(run_id)} AS run_id "
            f"FROM {table} WHERE {ref}.errorMessage IS NOT NULL"
        )
    if parts:
        return " UNION ALL ".join(parts)
    typed = ", ".join(f"NULL::{key_types[k]} AS {sql_ident(k)}" for k in key)
    return (
        f'SELECT {typed}, NULL::VARCHAR AS __aiq_fp, NULL::VARCHAR AS "column", '
        "NULL::VARCHAR AS endpoint, NULL::VARCHAR AS message, NULL::TIMESTAMP AS failed_at, "
        "NULL::VARCHAR AS run_id WHERE false"
    )


def count_failed(con: Any, files: list[str], key: list[str]) -> int:
    """Distinct failed keys in staged error files."""
    if not files:
        return 0
    keys = ", ".join(sql_ident(k) for k in key)
    listing = "[" + ", ".join(sql_string(f) for f in files) + "]"
    rows = con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT {keys} FROM read_parquet({listing}, "
        "union_by_name=true))"
    ).fetchall()
    return int(rows[0][0])
