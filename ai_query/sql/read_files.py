"""Databricks' ``READ_FILES(path, format => 'binaryFile')`` on DuckDB and Spark: one row per
file with Databricks' binaryFile columns ``path``, ``modificationTime``, ``length`` and
``content`` (the bytes, which ``ai_query(..., files => content)`` sends).

DuckDB reads the files with ``read_blob``; Spark with its ``binaryFile`` data source
(``binaryFile.`<path>```). Other formats are left to the target as written.
"""

from __future__ import annotations

from sqlglot import exp

FUNCTION_NAME = "read_files"
BINARY_FORMAT = "binaryfile"


def binary_file_path(node: exp.Expression) -> exp.Expression | None:
    """The path argument when ``node`` is a table ``READ_FILES(path, format =>
    'binaryFile')``, else None."""
    call = node.this if isinstance(node, exp.Table) else None
    if not isinstance(call, exp.Anonymous) or call.name.lower() != FUNCTION_NAME:
        return None
    if not call.expressions:
        return None
    path, *options = call.expressions
    for option in options:
        if (
            isinstance(option, (exp.Kwarg, exp.PropertyEQ))
            and option.this.name.lower() == "format"
            and isinstance(option.expression, exp.Literal)
            and option.expression.this.lower() == BINARY_FORMAT
        ):
            return path
    return None


def rewrite_read_files(node: exp.Expression, write: str) -> exp.Expression:
    """A binaryFile ``READ_FILES`` table for ``write`` (duckdb or spark); other nodes as
    they are."""
    path = binary_file_path(node)
    if path is None or write == "databricks":
        return node
    alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier("read_files"))
    if write == "spark":
        if not (isinstance(path, exp.Literal) and path.is_string):
            return node
        table = exp.Table(
            this=exp.Identifier(this=path.this, quoted=True), db=exp.to_identifier("binaryFile")
        )
        table.set("alias", alias)
        return table
    select = exp.select(
        exp.alias_(exp.column("filename"), "path"),
        exp.alias_(exp.column("last_modified"), "modificationTime"),
        exp.alias_(exp.column("size"), "length"),
        exp.column("content"),
    ).from_(exp.Table(this=exp.Anonymous(this="read_blob", expressions=[path.copy()])))
    return exp.Subquery(this=select, alias=alias)
