"""Find ``ai_query(...)`` calls in a sqlglot tree and bind their arguments.

sqlglot parses ``ai_query(...)`` as :class:`sqlglot.exp.Anonymous`; :func:`bind_call` turns it
at once into a typed :class:`AIQueryCall`, checking every constant argument so a bad call fails
before any row runs. Named arguments come as ``exp.Kwarg`` (``name => value``, every dialect)
or ``exp.PropertyEQ`` (``name := value``, DuckDB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlglot import exp

from ai_query.errors import UnsupportedCallError
from ai_query.options import CallOptions, ModelParameters
from ai_query.sql.types import parse_return_type

FUNCTION_NAME = "ai_query"
#: The function DuckDB and Spark run for a plain embeddings call (``ai_query(endpoint, text)``
#: on an embeddings endpoint): its vectors come back as an Arrow list of floats, not JSON text.
VECTOR_FUNCTION_NAME = "__ai_query_vector"
#: Databricks' parameter names, in positional order.
PARAMETERS: tuple[str, ...] = (
    "endpoint",
    "request",
    "returnType",
    "failOnError",
    "modelParameters",
    "responseFormat",
)
#: Parameters given by name only (``files => content``: a row's file, Databricks' multimodal
#: form).
NAMED_ONLY: tuple[str, ...] = ("files",)
_CANONICAL = {name.lower(): name for name in (*PARAMETERS, *NAMED_ONLY)}


@dataclass(frozen=True)
class AIQueryCall:
    """One bound ``ai_query(...)`` call.

    Attributes:
        node: the original call node in the parsed tree.
        endpoint: the serving endpoint's name.
        request: the request expression (a column, a concat(...), a literal, ...).
        return_type: the ``returnType`` DDL string as written, or None.
        fail_on_error: the ``failOnError`` flag (default True).
        model_parameters: ``modelParameters`` as Python values, keys as written.
        response_format: the ``responseFormat`` string, or None.
        files: the ``files`` expression (a row's file content, BLOB/BINARY), or None.
    """

    node: exp.Expression
    endpoint: str
    request: exp.Expression
    return_type: str | None = None
    fail_on_error: bool = True
    model_parameters: dict[str, Any] = field(default_factory=dict)
    response_format: str | None = None
    files: exp.Expression | None = None

    def options(self) -> CallOptions:
        """The call's constant arguments as validated :class:`CallOptions`.

        Raises:
            ConfigError: on an unknown modelParameters key or a bad parameter value.
        """
        return CallOptions(
            endpoint=self.endpoint,
            model_parameters=ModelParameters.from_value(self.model_parameters),
            return_type=self.return_type,
            response_format=self.response_format,
            fail_on_error=self.fail_on_error,
        )


def is_ai_query(node: exp.Expr) -> bool:
    """True when ``node`` is an unqualified ``ai_query(...)`` call (any case)."""
    return isinstance(node, exp.Anonymous) and node.name.lower() == FUNCTION_NAME


def find_calls(tree: exp.Expr) -> list[AIQueryCall]:
    """Bind every ``ai_query(...)`` call in ``tree`` (projections, WHERE, CTEs, joins, ...).

    Raises:
        UnsupportedCallError: when a call has arguments of the wrong shape.
        SQLParseError: when a call's returnType DDL does not parse.
    """
    return [
        bind_call(node) for node in tree.find_all(exp.Anonymous, bfs=False) if is_ai_query(node)
    ]


def bind_named_args(call: exp.Anonymous) -> dict[str, exp.Expression]:
    """Map each argument of ``call`` to its canonical Databricks parameter name.

    Raises:
        UnsupportedCallError: on too many arguments, an unknown or repeated name, or a
            positional argument after a named one.
    """
    bound: dict[str, exp.Expression] = {}
    named_seen = False
    for position, arg in enumerate(call.expressions):
        if isinstance(arg, (exp.Kwarg, exp.PropertyEQ)):
            raw = arg.this.name
            name = _CANONICAL.get(raw.lower())
            if name is None:
                raise UnsupportedCallError(
                    f"ai_query: unknown argument {raw!r}; allowed: "
                    f"{', '.join((*PARAMETERS, *NAMED_ONLY))}"
                )
            value = arg.expression
            named_seen = True
        else:
            if named_seen:
                raise UnsupportedCallError(
                    f"ai_query: positional argument {arg.sql()!r} after a named argument"
                )
            if position >= len(PARAMETERS):
                raise UnsupportedCallError(
                    f"ai_query takes at most {len(PARAMETERS)} arguments "
                    f"({', '.join(PARAMETERS)}), got {len(call.expressions)}"
                )
            name = PARAMETERS[position]
            value = arg
        if name in bound:
            raise UnsupportedCallError(f"ai_query: argument {name} given twice")
        bound[name] = value
    return bound


def bind_call(node: exp.Expr) -> AIQueryCall:
    """Bind a parsed ``ai_query(...)`` call (positional or named arguments) to an AIQueryCall.

    Raises:
        UnsupportedCallError: naming the argument: fewer than two arguments, a non-literal
            endpoint, returnType or responseFormat, a non-boolean failOnError, a
            modelParameters that is not a constant struct/map, an unknown or repeated name.
        SQLParseError: when the returnType DDL does not parse.
    """
    if not isinstance(node, exp.Anonymous) or not is_ai_query(node):
        raise UnsupportedCallError(f"not an ai_query(...) call: {node.sql()!r}")
    args = bind_named_args(node)
    for required in ("endpoint", "request"):
        if required not in args:
            raise UnsupportedCallError(
                f"ai_query needs at least the endpoint and request arguments; {required} is missing"
            )
    return_type = _optional_string(args, "returnType")
    if return_type is not None:
        parse_return_type(return_type)
    fail = args.get("failOnError")
    if fail is not None and not isinstance(fail, exp.Boolean):
        raise UnsupportedCallError(
            f"ai_query: failOnError must be the literal true or false, got {fail.sql()!r}"
        )
    params = args.get("modelParameters")
    files = args.get("files")
    return AIQueryCall(
        node=node,
        endpoint=_string(args["endpoint"], "endpoint"),
        request=args["request"],
        return_type=return_type,
        fail_on_error=True if fail is None else bool(fail.this),
        model_parameters={} if params is None else model_parameters_of(params),
        response_format=_optional_string(args, "responseFormat"),
        files=None if files is None or isinstance(files, exp.Null) else files,
    )


def _string(value: exp.Expression, name: str) -> str:
    if isinstance(value, exp.Literal) and value.is_string:
        return value.this
    raise UnsupportedCallError(f"ai_query: {name} must be a string literal, got {value.sql()!r}")


def _optional_string(args: dict[str, exp.Expression], name: str) -> str | None:
    value = args.get(name)
    # NULL stands for "not given", so later arguments can be given by position.
    return None if value is None or isinstance(value, exp.Null) else _string(value, name)


class _NotConstant(Exception):
    """Internal: an expression is not a constant."""


def model_parameters_of(value: exp.Expression) -> dict[str, Any]:
    """The Python dict of a constant ``modelParameters`` expression.

    Accepts ``named_struct('k', v, ...)``, ``struct(v AS k)``, DuckDB ``{'k': v}`` and
    ``MAP {'k': v}``, ``map('k', v)``, ``map(['k'], [v])``, ``to_json(<struct>)`` and a JSON
    object string literal; values are numbers, strings, booleans, NULL or arrays of those.

    Raises:
        UnsupportedCallError: when the expression is not a constant struct/map.
    """
    try:
        return _params(value)
    except _NotConstant as exc:
        raise UnsupportedCallError(
            "ai_query: modelParameters must be a constant struct or map such as "
            f"named_struct('max_tokens', 100), got {value.sql()!r}{exc}"
        ) from None


def _params(value: exp.Expression) -> dict[str, Any]:
    if isinstance(value, exp.Null):
        return {}
    if isinstance(value, exp.Literal) and value.is_string:
        try:
            data = json.loads(value.this)
        except json.JSONDecodeError:
            raise _NotConstant(" (not a JSON object)") from None
        if not isinstance(data, dict):
            raise _NotConstant(" (not a JSON object)")
        return data
    if isinstance(value, (exp.JSONFormat, exp.ToMap, exp.Paren)):
        return _params(value.this)
    if isinstance(value, exp.Anonymous) and value.name.lower() == "to_json":
        if len(value.expressions) != 1:
            raise _NotConstant(" (to_json takes one struct)")
        return _params(value.expressions[0])
    pairs: list[tuple[str, exp.Expression]]
    if isinstance(value, exp.Struct):
        pairs = [_struct_entry(entry) for entry in value.expressions]
    elif isinstance(value, exp.Anonymous) and value.name.lower() == "named_struct":
        pairs = _flat_pairs(value.expressions)
    elif isinstance(value, (exp.Map, exp.VarMap)):
        keys, values = value.args.get("keys"), value.args.get("values")
        key_list = keys.expressions if isinstance(keys, exp.Array) else [keys]
        value_list = values.expressions if isinstance(values, exp.Array) else [values]
        if len(key_list) != len(value_list) or None in key_list or None in value_list:
            raise _NotConstant(" (map keys and values do not pair up)")
        pairs = [(_key(k), v) for k, v in zip(key_list, value_list, strict=True)]
    else:
        raise _NotConstant("")
    out: dict[str, Any] = {}
    for key, item in pairs:
        if key in out:
            raise _NotConstant(f" (key {key!r} given twice)")
        out[key] = _python_value(item)
    return out


def _struct_entry(entry: exp.Expression) -> tuple[str, exp.Expression]:
    if isinstance(entry, (exp.PropertyEQ, exp.Kwarg)):
        return _key(entry.this), entry.expression
    if isinstance(entry, exp.Alias):
        return entry.alias, entry.this
    raise _NotConstant(f" (struct field {entry.sql()!r} has no name)")


def _flat_pairs(items: list[exp.Expression]) -> list[tuple[str, exp.Expression]]:
    if len(items) % 2:
        raise _NotConstant(" (named_struct needs name, value pairs)")
    return [(_key(items[i]), items[i + 1]) for i in range(0, len(items), 2)]


def _key(node: exp.Expression | None) -> str:
    if isinstance(node, (exp.Identifier, exp.Var, exp.Column)) or (
        isinstance(node, exp.Literal) and node.is_string
    ):
        return node.name
    raise _NotConstant(f" (key {node.sql() if node else None!r} is not a name)")


def _python_value(node: exp.Expression) -> Any:
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        value = node.to_py()
        return float(value) if isinstance(value, Decimal) else value
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and node.this.is_number:
        return -_python_value(node.this)
    if isinstance(node, (exp.Paren, exp.Cast)):
        return _python_value(node.this)
    if isinstance(node, exp.Array):
        return [_python_value(item) for item in node.expressions]
    raise _NotConstant(f" (value {node.sql()!r} is not a constant)")
