"""``vector_search(index => ..., query_text => ... | query_vector => ..., num_results => k)``.

A vector index (made by :func:`ai_query.create_vector_index`) is a table holding the source
table's columns plus each row's text hash and embedding. In DuckDB a ``vector_search`` call,
in ``FROM`` or as ``LATERAL`` (so each outer row's text is its query), becomes a subquery::

    (SELECT i.* EXCLUDE (__text_md5, __embedding),
            array_cosine_similarity(i.__embedding, v.__query) AS search_score
     FROM (SELECT CAST(<query vector> AS FLOAT[<dims>]) AS __query) AS v, <index> AS i
     WHERE i.__embedding IS NOT NULL
     ORDER BY search_score DESC, i.<primary key> LIMIT <k>)

an exact top-k by cosine, where the query vector of ``query_text`` is ``ai_query(<the index's
embedding endpoint>, query_text)``, so a query text is embedded like the rows were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from ai_query.errors import ConfigError, UnsupportedCallError

#: The table that lists the vector indexes of a database (one row per index).
INDEX_REGISTRY = "ai_query_vector_indexes"
#: Columns an index adds to the source's (``__norm``, the vector's length, in Spark only).
HASH_COLUMN, EMBEDDING_COLUMN, NORM_COLUMN = "__text_md5", "__embedding", "__norm"
_PARAMS = ("index", "query_text", "query_vector", "num_results")


@dataclass(frozen=True, kw_only=True)
class VectorIndexInfo:
    """What a search needs to know about an index (a row of :data:`INDEX_REGISTRY`)."""

    name: str
    """The index, also the name of the table that holds it."""
    source_table: str
    """The table it was built from."""
    primary_key: str
    """The source's key column."""
    text_column: str
    """The embedded column."""
    endpoint: str
    """The embeddings endpoint."""
    dims: int
    """Vector dimensions."""
    columns: tuple[str, ...] = ()
    """The source's columns (Spark SQL has no ``* EXCLUDE``, so a search lists them)."""


@dataclass(frozen=True)
class VectorSearchCall:
    """A vector_search call's arguments."""

    index: str
    query_text: exp.Expression | None
    query_vector: exp.Expression | None
    num_results: int


def bind_vector_search(node: exp.VectorSearch) -> VectorSearchCall:
    """Read a call's arguments: named (``=>``) or positional (index, query_text, num_results).

    Raises:
        UnsupportedCallError: an unknown or repeated argument, both or neither query, a
            non-literal index or num_results.
    """
    values = [node.args[k] for k in node.arg_types if node.args.get(k) is not None]
    given: dict[str, exp.Expression] = {}
    positional = ("index", "query_text", "num_results")
    for i, value in enumerate(values):
        if isinstance(value, (exp.Kwarg, exp.PropertyEQ)):
            key, value = value.this.name.lower(), value.expression
        elif i < len(positional):
            key = positional[i]
        else:
            raise UnsupportedCallError("vector_search: too many arguments")
        if key not in _PARAMS or key in given:
            raise UnsupportedCallError(f"vector_search: unknown or repeated argument {key!r}")
        given[key] = value
    if "index" not in given or not isinstance(given["index"], exp.Literal):
        raise UnsupportedCallError("vector_search: index => '<name>' (a string literal) is needed")
    if ("query_text" in given) == ("query_vector" in given):
        raise UnsupportedCallError("vector_search: give exactly one of query_text, query_vector")
    k = given.get("num_results", exp.Literal.number(10))
    if not isinstance(k, exp.Literal) or k.is_string or int(k.to_py()) < 1:
        raise UnsupportedCallError("vector_search: num_results must be a positive integer literal")
    return VectorSearchCall(
        given["index"].name, given.get("query_text"), given.get("query_vector"), int(k.to_py())
    )


def search_subquery(
    call: VectorSearchCall, info: VectorIndexInfo, write: str = "duckdb"
) -> exp.Select:
    """The SELECT that answers ``call`` over the index ``info`` in DuckDB (see the module doc)
    or Spark (the same, with the cosine written with ``zip_with``/``aggregate`` over the
    stored vector lengths)."""
    key = exp.to_identifier(info.primary_key).sql(write)
    table = exp.to_table(info.name).sql(write)
    tail = (
        f"WHERE i.{EMBEDDING_COLUMN} IS NOT NULL "
        f"ORDER BY search_score DESC, i.{key} LIMIT {call.num_results}"
    )
    if write == "duckdb":
        sql = (
            f"SELECT i.* EXCLUDE ({HASH_COLUMN}, {EMBEDDING_COLUMN}), "
            f"array_cosine_similarity(i.{EMBEDDING_COLUMN}, v.__query) AS search_score "
            f"FROM (SELECT CAST(__query_placeholder AS FLOAT[{info.dims}]) AS __query) AS v, "
            f"{table} AS i {tail}"
        )
    else:
        columns = ", ".join(f"i.{exp.to_identifier(c).sql(write)}" for c in info.columns)
        dot = f"aggregate(zip_with(i.{EMBEDDING_COLUMN}, v.__query, (x, y) -> x * y), 0D, " \
            "(a, x) -> a + x)"
        norm = "sqrt(aggregate(transform(s.q, x -> x * x), 0D, (a, x) -> a + x))"
        sql = (
            f"SELECT {columns}, {dot} / (i.{NORM_COLUMN} * v.__norm) AS search_score "
            f"FROM (SELECT s.q AS __query, {norm} AS __norm FROM "
            f"(SELECT __query_placeholder AS q) AS s) AS v, {table} AS i {tail}"
        )
    select = sqlglot.parse_one(sql, read=write)
    if call.query_text is not None:
        query: exp.Expression = exp.Anonymous(
            this="ai_query",
            expressions=[exp.Literal.string(info.endpoint), call.query_text.copy()],
        )
    else:
        query = call.query_vector.copy() if call.query_vector is not None else exp.null()
    placeholder = next(c for c in select.find_all(exp.Column) if c.name == "__query_placeholder")
    placeholder.replace(query)
    if not isinstance(select, exp.Select):  # parse_one of a SELECT gives one
        raise UnsupportedCallError("vector_search: could not build the search")
    return select


def rewrite_vector_search(
    node: exp.Expression, write: str, indexes: Mapping[str, VectorIndexInfo]
) -> exp.Expression:
    """``FROM vector_search(...)`` / ``LATERAL vector_search(...)`` as a DuckDB or Spark
    subquery; a pure rewrite (other nodes, and a Databricks target, come back unchanged).

    Raises:
        ConfigError: an index the database (or Spark session) does not have.
        UnsupportedCallError: a bad call.
    """
    if not isinstance(node, (exp.Table, exp.Lateral)) or not isinstance(
        node.this, exp.VectorSearch
    ):
        return node
    if write == "databricks":
        return node
    call = bind_vector_search(node.this)
    info = indexes.get(call.index)
    if info is None:
        known = ", ".join(sorted(indexes)) or "none"
        raise ConfigError(
            f"vector_search: no vector index {call.index!r} (known: {known}); create it with "
            "ai_query.create_vector_index(...)"
        )
    if write != "duckdb" and not info.columns:
        raise UnsupportedCallError(f"vector_search: index {info.name!r} lists no columns")
    subquery = search_subquery(call, info, write)
    alias = node.args.get("alias")
    if isinstance(node, exp.Lateral):
        return exp.Lateral(this=subquery.subquery(), alias=alias.copy() if alias else None)
    return subquery.subquery(alias=alias.copy() if alias else None)
