"""Transpile Databricks SQL with ``ai_query(...)`` calls to DuckDB or Spark SQL.

Each ``ai_query`` call is re-emitted in one canonical form (positional endpoint and request,
then only the named arguments that were given, with ``=>``), and typed results are wrapped so
the target returns the declared SQL type: the UDFs return VARCHAR (JSON text when typed)
because UDF result types are fixed. Everything else is sqlglot's own transpilation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, TokenError

from ai_query.errors import ConfigError, SQLParseError
from ai_query.sql.calls import (
    FUNCTION_NAME,
    VECTOR_FUNCTION_NAME,
    AIQueryCall,
    bind_call,
    bind_named_args,
    find_calls,
)
from ai_query.sql.catalog_protocol import EndpointCatalog
from ai_query.sql.read_files import rewrite_read_files
from ai_query.sql.response_format import resolve_output
from ai_query.sql.semantic_agg import check_aggregate_call, is_aggregate_call, spark_aggregate
from ai_query.sql.task_calls import (
    MAP_NODES,
    as_anonymous,
    bind_task_call,
    constant_value,
    find_task_calls,
    is_task_call,
)
from ai_query.sql.types import SQLType, error_struct
from ai_query.sql.vector_search import VectorIndexInfo, rewrite_vector_search
from ai_query.tasks import Task

READ_DIALECTS: tuple[str, ...] = ("databricks", "spark", "duckdb")
WRITE_DIALECTS: tuple[str, ...] = ("duckdb", "spark", "databricks")


@dataclass(frozen=True)
class RewriteContext:
    """What the rewrites need to know besides the node: the target and the catalog."""

    write: str
    """Target dialect."""
    catalog: EndpointCatalog | None = None
    """Endpoint catalog; without one every endpoint is assumed to be a chat endpoint."""
    vector_indexes: Mapping[str, VectorIndexInfo] = field(default_factory=dict)
    """The vector indexes ``vector_search`` may name, by name."""
    native_types: bool = False
    """Whether the target types the calls itself (Databricks; Spark with ai_query's
    extension, :mod:`ai_query.udf.spark.typed`): calls are then checked, not wrapped."""


def task_of(call: AIQueryCall, catalog: EndpointCatalog | None) -> Task:
    """The call's endpoint task from the catalog (chat when there is no catalog).

    Raises:
        UnknownEndpointError: when the catalog does not hold the endpoint.
    """
    return catalog.task_of(call.endpoint) if catalog is not None else Task.CHAT


def result_type(call: AIQueryCall, catalog: EndpointCatalog | None) -> SQLType:
    """The SQL type the call returns, including the failOnError => false error STRUCT.

    Raises:
        ConfigError: on an unknown endpoint or arguments the endpoint's task does not allow.
    """
    spec = resolve_output(call.return_type, call.response_format, task_of(call, catalog))
    return spec.sql_type if call.fail_on_error else error_struct(spec.sql_type)


def is_plain_embedding(call: AIQueryCall, catalog: EndpointCatalog | None) -> bool:
    """Whether ``call`` only embeds its text (an embeddings endpoint, failing on error, no
    other argument): DuckDB and Spark then run it as :data:`VECTOR_FUNCTION_NAME`."""
    return (
        call.fail_on_error
        and call.return_type is None
        and call.response_format is None
        and not call.model_parameters
        and call.files is None
        and task_of(call, catalog) == Task.EMBEDDINGS
    )


def _with_request(node: exp.Expression, ctx: RewriteContext, rewrite: Rewrite) -> exp.Expression:
    """A copy of the call ``node`` whose request has ``rewrite`` applied (nested calls)."""
    new = node.copy()
    if isinstance(new, exp.Anonymous):
        request = bind_named_args(new)["request"]
        request.replace(request.transform(rewrite, ctx))
    return new


def _with_args(node: exp.Expression, ctx: RewriteContext, rewrite: Rewrite) -> exp.Expression:
    """A copy of the call ``node`` whose arguments have ``rewrite`` applied (nested calls)."""
    new = node.copy()
    for arg in list(new.expressions):
        arg.replace(arg.transform(rewrite, ctx))
    return new


def canonicalize_call(node: exp.Expression, ctx: RewriteContext) -> exp.Expression:
    """Re-emit an ``ai_query(...)`` call in canonical form for ``ctx.write``.

    ``ai_query('<endpoint>', <request>, returnType => ..., failOnError => false,
    modelParameters => <struct>, responseFormat => ..., files => <content>)`` with only the
    arguments given
    (failOnError only when false), canonical names, and the target's struct syntax.
    """
    if not isinstance(node, exp.Anonymous) or node.name.lower() != FUNCTION_NAME:
        return node
    call = bind_call(node)
    request = call.request.transform(canonicalize_call, ctx)  # nested calls in the request
    args: list[exp.Expression] = [exp.Literal.string(call.endpoint), request]
    if call.return_type is not None:
        args.append(_kwarg("returnType", exp.Literal.string(call.return_type)))
    if not call.fail_on_error:
        args.append(_kwarg("failOnError", exp.false()))
    if call.model_parameters:
        args.append(_kwarg("modelParameters", _struct_literal(call.model_parameters, ctx.write)))
    if call.response_format is not None:
        args.append(_kwarg("responseFormat", exp.Literal.string(call.response_format)))
    if call.files is not None:
        args.append(_kwarg("files", call.files.transform(canonicalize_call, ctx)))
    return exp.Anonymous(this=FUNCTION_NAME, expressions=args)


def typed_result(node: exp.Anonymous, catalog: EndpointCatalog | None) -> SQLType | None:
    """The SQL type a call of ai_query or of a task function returns; None for a plain
    embeddings call, which DuckDB and Spark answer with :data:`VECTOR_FUNCTION_NAME`.

    Raises:
        ConfigError, UnsupportedCallError, SQLParseError: a bad call (as :func:`check_calls`).
    """
    if is_task_call(node):
        return bind_task_call(node).spec.result_type()
    call = bind_call(node)
    call.options()
    return None if is_plain_embedding(call, catalog) else result_type(call, catalog)


def wrap_typed_result(node: exp.Expression, ctx: RewriteContext) -> exp.Expression:
    """Wrap a call whose result is not a plain STRING so the target returns the SQL type.

    DuckDB: ``CAST(CAST(<call> AS JSON) AS <type>)``; Spark: ``from_json(<call>, '<ddl>')``
    (a scalar: ``from_json(concat('[', <call>, ']'), 'ARRAY<T>')[0]``); Databricks: unchanged
    (ai_query types its result natively). A plain embeddings call becomes
    ``__ai_query_vector(<endpoint>, <request>)``, whose UDF returns the FLOAT array itself. Task
    functions are wrapped the same way where their UDF's fixed type is not theirs
    (``ai_extract``'s STRUCT).
    """
    if ctx.write == "databricks" or ctx.native_types or not isinstance(node, exp.Anonymous):
        return node
    if not is_task_call(node) and node.name.lower() != FUNCTION_NAME:
        return node
    typ = typed_result(node, ctx.catalog)
    if is_task_call(node):
        inner = _maps_as_json(_with_args(node, ctx, wrap_typed_result))
        if typ is None or typ.kind not in ("STRUCT", "ARRAY"):
            return inner  # STRING, or ai_similarity's FLOAT, which its UDF returns as such
    elif typ is None:
        call = bind_call(node)
        request = call.request.transform(wrap_typed_result, ctx)
        return exp.Anonymous(
            this=VECTOR_FUNCTION_NAME, expressions=[exp.Literal.string(call.endpoint), request]
        )
    else:
        inner = _with_request(node, ctx, wrap_typed_result)
    if typ.is_string:
        return inner
    if ctx.write == "duckdb":
        as_json = exp.Cast(this=inner, to=exp.DataType.build("JSON"))
        return exp.Cast(
            this=as_json, to=exp.DataType(this=exp.DType.USERDEFINED, kind=typ.to_ddl("duckdb"))
        )
    ddl, scalar = spark_json_ddl(typ)
    if not scalar:
        return exp.Anonymous(this="from_json", expressions=[inner, exp.Literal.string(ddl)])
    as_array = exp.Anonymous(
        this="concat", expressions=[exp.Literal.string("["), inner, exp.Literal.string("]")]
    )
    parsed = exp.Anonymous(this="from_json", expressions=[as_array, exp.Literal.string(ddl)])
    return exp.Bracket(this=parsed, expressions=[exp.Literal.number(0)])


def spark_json_ddl(typ: SQLType) -> tuple[str, bool]:
    """How Spark reads a ``typ`` answer from its JSON text: ``from_json``'s DDL, and whether
    the text is a scalar, read as the one element of an array (``from_json`` only reads
    nested types)."""
    if typ.kind in ("ARRAY", "STRUCT", "MAP"):
        return typ.to_ddl("spark"), False
    return SQLType.array(typ).to_ddl("spark"), True


def _maps_as_json(node: exp.Expression) -> exp.Expression:
    """A task call whose ``map(...)`` options argument is given as JSON text instead (every
    target reads the same text; DuckDB's MAP would need one value type)."""
    for arg in list(node.expressions):
        if isinstance(arg, MAP_NODES):
            value = constant_value(node.name, arg)
            arg.replace(exp.Literal.string(json.dumps(value)))
    return node


def rewrite_aggregates(node: exp.Expression, ctx: RewriteContext) -> exp.Expression:
    """``ai_agg``/``ai_summarize_agg`` for Spark: a UDF over ``collect_list`` (DuckDB's macros
    and Databricks take the calls as written)."""
    return spark_aggregate(node) if ctx.write == "spark" else node


def rewrite_vector_searches(node: exp.Expression, ctx: RewriteContext) -> exp.Expression:
    """``vector_search(...)`` as an exact top-k subquery (DuckDB); first, so the ai_query call
    that embeds its query text is then typed like any other."""
    return rewrite_vector_search(node, ctx.write, ctx.vector_indexes)


def rewrite_binary_files(node: exp.Expression, ctx: RewriteContext) -> exp.Expression:
    """``READ_FILES(path, format => 'binaryFile')`` as the target reads files
    (:mod:`ai_query.sql.read_files`)."""
    return rewrite_read_files(node, ctx.write)


Rewrite = Callable[[exp.Expression, RewriteContext], exp.Expression]
#: The rewrites, in order; each is applied to the whole tree with ``tree.transform``.
REWRITES: tuple[Rewrite, ...] = (
    rewrite_binary_files,
    rewrite_vector_searches,
    canonicalize_call,
    wrap_typed_result,
    rewrite_aggregates,
)


def _kwarg(name: str, value: exp.Expression) -> exp.Kwarg:
    return exp.Kwarg(this=exp.var(name), expression=value)


def _struct_literal(params: dict[str, Any], write: str) -> exp.Expression:
    if write == "duckdb":
        return exp.Struct(
            expressions=[
                exp.PropertyEQ(this=exp.Literal.string(key), expression=exp.convert(value))
                for key, value in params.items()
            ]
        )
    flat: list[exp.Expr] = []
    for key, value in params.items():
        flat += [exp.Literal.string(key), exp.convert(value)]
    named_struct = exp.Anonymous(this="named_struct", expressions=flat)
    if write == "spark":
        # The Spark UDF's parameter types are fixed, so the struct travels as JSON text.
        return exp.Anonymous(this="to_json", expressions=[named_struct])
    return named_struct


def check_calls(tree: exp.Expression, catalog: EndpointCatalog | None) -> list[AIQueryCall]:
    """Bind and validate every call in ``tree`` so errors surface before any row runs.

    Raises:
        UnsupportedCallError: a call with arguments of the wrong shape.
        SQLParseError: a returnType that does not parse.
        ConfigError: an unknown endpoint, modelParameters key or task/type mismatch; a task
            function's bad labels, language or word limit.
    """
    calls = find_calls(tree)
    for call in calls:
        call.options()
        result_type(call, catalog)
    find_task_calls(tree)  # bad labels, language or word limit fail here
    for node in tree.find_all(exp.Anonymous):
        if is_aggregate_call(node):
            check_aggregate_call(node)
    return calls


def parse_sql(sql: str, read: str) -> list[exp.Expression]:
    """Parse ``sql`` (one or more statements) in dialect ``read``.

    Raises:
        SQLParseError: with sqlglot's line and column when the SQL does not parse.
    """
    try:
        trees = _parse(sql, read)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        message = first.get("description") or str(exc)
        raise SQLParseError(
            f"cannot parse {read} SQL: {message}", first.get("line"), first.get("col")
        ) from exc
    except TokenError as exc:
        raise SQLParseError(f"cannot tokenize {read} SQL: {exc}") from exc
    # Task functions sqlglot parses into typed nodes become plain calls, as ai_query is.
    return [tree.transform(as_anonymous) for tree in trees if isinstance(tree, exp.Expression)]


def _parse(sql: str, read: str) -> list[Any]:
    """sqlglot's parse, except that a ``vector_search`` call may leave out ``num_results``:
    sqlglot's VectorSearch (BigQuery's) wants three arguments, Databricks' defaults the third
    (:func:`~ai_query.sql.vector_search.bind_vector_search` checks the call itself)."""
    try:
        return sqlglot.parse(sql, read=read)
    except ParseError as exc:
        if "VectorSearch" not in str(exc):
            raise
    try:  # every error, to see whether the short calls are the only ones
        return sqlglot.parse(sql, read=read, error_level=ErrorLevel.RAISE)
    except ParseError as exc:
        others = [e for e in exc.errors if not _short_vector_search(e)]
        if others:
            raise ParseError(str(others[0].get("description")), errors=others) from None
    return sqlglot.parse(sql, read=read, error_level=ErrorLevel.IGNORE)


def _short_vector_search(error: dict[str, Any]) -> bool:
    description = str(error.get("description", ""))
    return description.startswith("Required keyword") and "VectorSearch" in description


def transpile(
    sql: str,
    read: str = "databricks",
    write: str = "duckdb",
    *,
    catalog: EndpointCatalog | None = None,
    vector_indexes: Mapping[str, VectorIndexInfo] | None = None,
    native_types: bool = False,
) -> str:
    """Transpile SQL with ``ai_query`` calls from ``read`` to ``write``.

    Args:
        sql: one or more SQL statements.
        read: source dialect: "databricks", "spark" or "duckdb".
        write: target dialect: "duckdb", "spark" or "databricks".
        catalog: endpoint catalog; checks endpoint names and gives each endpoint's task
            (embeddings results become ARRAY<FLOAT>). Without one, endpoints are assumed chat.
        vector_indexes: the indexes ``vector_search`` may name (DuckDB target).
        native_types: the target types ai_query and task function calls itself (Spark with
            ai_query's extension): calls are checked and canonicalized, not wrapped.

    Returns:
        The transpiled statements joined by ``";\\n"``.

    Raises:
        ConfigError: an unknown dialect, endpoint (UnknownEndpointError) or modelParameters
            key, or arguments the endpoint's task does not allow.
        SQLParseError: SQL or a returnType that does not parse.
        UnsupportedCallError: an ai_query call with arguments of the wrong shape.
    """
    if read not in READ_DIALECTS:
        raise ConfigError(f"unknown read dialect {read!r}; expected one of {READ_DIALECTS}")
    if write not in WRITE_DIALECTS:
        raise ConfigError(f"unknown write dialect {write!r}; expected one of {WRITE_DIALECTS}")
    trees = parse_sql(sql, read)
    for tree in trees:
        check_calls(tree, catalog)
    ctx = RewriteContext(
        write=write, catalog=catalog, vector_indexes=vector_indexes or {},
        native_types=native_types,
    )
    out: list[str] = []
    for tree in trees:
        for rewrite in REWRITES:
            tree = tree.transform(rewrite, ctx)
        # normalize_functions=False keeps ai_query/named_struct/from_json lower case, as the
        # UDFs are registered.
        out.append(tree.sql(dialect=write, normalize_functions=False))
    return ";\n".join(out)
