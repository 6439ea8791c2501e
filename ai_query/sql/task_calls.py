"""Task function calls in SQL: found in a sqlglot tree, bound to a checked
:class:`~ai_query.sql.task_functions.TaskSpec`, their constant arguments read as Python values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from ai_query.errors import UnsupportedCallError
from ai_query.sql.task_functions import TASK_FUNCTIONS, TaskSpec, task_spec


def as_anonymous(node: exp.Expression) -> exp.Expression:
    """sqlglot's typed ``AIClassify``/``AISimilarity`` nodes as plain calls, like the others.

    sqlglot knows two of the functions (from other dialects) and parses them into typed nodes;
    turned back into ``exp.Anonymous`` they bind, check and print like every task function.
    A pure rewrite: any other node comes back unchanged.
    """
    if isinstance(node, exp.AIClassify):
        args = [node.this, node.args["categories"]]
        if node.args.get("config") is not None:
            args.append(node.args["config"])
        return exp.Anonymous(this="ai_classify", expressions=args)
    if isinstance(node, exp.AISimilarity):
        return exp.Anonymous(this="ai_similarity", expressions=list(node.expressions))
    if isinstance(node, (exp.AIAgg, exp.AISummarizeAgg)):
        name = "ai_agg" if isinstance(node, exp.AIAgg) else "ai_summarize_agg"
        args = [node.this] + ([node.expression] if node.args.get("expression") else [])
        return exp.Anonymous(this=name, expressions=args)
    return node


#: Other functions a statement may call that need the rewriting connection or transpile.
SEMANTIC_FUNCTIONS: tuple[str, ...] = ("ai_agg", "ai_summarize_agg", "vector_search")
_CALLS = re.compile(
    r"\b(?:ai_query|" + "|".join((*TASK_FUNCTIONS, *SEMANTIC_FUNCTIONS)) + r")\s*\(",
    re.IGNORECASE,
)


def mentions_ai_functions(sql: str) -> bool:
    """True when ``sql`` may call ai_query or a task function (a cheap text test: statements
    without one run as written, untouched by sqlglot)."""
    return _CALLS.search(sql) is not None


_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?!ANALY[SZ]E\b)(.*)$", re.IGNORECASE | re.DOTALL)


def explained_statement(sql: str) -> str | None:
    """The statement that ``EXPLAIN <statement>`` explains, when it may call ai_query or a task
    function (``EXPLAIN ANALYZE`` runs the statement, so it is not one of these); else None."""
    match = _EXPLAIN.match(sql)
    if match is None or not mentions_ai_functions(match.group(1)):
        return None
    return match.group(1).strip().rstrip(";").strip()


#: The functions whose answers come from a model (ai_query and the task functions).
AI_FUNCTIONS: frozenset[str] = frozenset(("ai_query", *TASK_FUNCTIONS, *SEMANTIC_FUNCTIONS[:2]))


def answers_deciding_rows(tree: exp.Expression) -> set[str]:
    """The AI functions whose answers decide which rows reach another AI call: those called in
    a predicate (``WHERE``, ``HAVING``, ``QUALIFY``, a join's ``ON``) or inside another AI call
    (empty: every AI call's rows are known before it runs)."""
    found: set[str] = set()
    for node in tree.find_all(exp.Anonymous):
        name = str(node.this).lower()
        if name not in AI_FUNCTIONS:
            continue
        parent = node.parent
        while parent is not None:
            if isinstance(parent, (exp.Where, exp.Having, exp.Qualify, exp.Join)) or (
                isinstance(parent, exp.Anonymous) and str(parent.this).lower() in AI_FUNCTIONS
            ):
                found.add(name)
                break
            parent = parent.parent
    return found


def reads_only(tree: exp.Expression) -> bool:
    """Whether a statement only reads (a query: ``SELECT``, ``WITH``, ``VALUES``, set ops)."""
    return isinstance(tree, exp.Query)


def row_input_count(function: str, n_args: int) -> int:
    """How many of a task function call's ``n_args`` arguments are per-row inputs (the rest
    are constants): both texts of ai_similarity, predicate and content of ai_filter."""
    if function == "ai_similarity":
        return 2
    if function == "ai_filter":
        return max(1, min(n_args, 2))
    return 1


def is_task_call(node: exp.Expr) -> bool:
    """True when ``node`` is a call of one of :data:`TASK_FUNCTIONS` (any case)."""
    return isinstance(node, exp.Anonymous) and node.name.lower() in TASK_FUNCTIONS


@dataclass(frozen=True)
class TaskCall:
    """A task function call found in SQL: its checked spec and its row arguments."""

    node: exp.Anonymous
    """The call node."""
    spec: TaskSpec
    """The checked constant arguments."""
    inputs: tuple[exp.Expression, ...]
    """The per-row arguments (content; both texts for ai_similarity; ai_filter's predicate and
    content)."""


def bind_task_call(node: exp.Expr) -> TaskCall:
    """Check a task function call in SQL; its constant arguments must be literals.

    Raises:
        ConfigError: bad labels, language or word limit (see :func:`task_spec`).
        UnsupportedCallError: a non-literal constant argument or a wrong argument count.
    """
    if not isinstance(node, exp.Anonymous) or not is_task_call(node):
        raise UnsupportedCallError(f"not a task function call: {node.sql()!r}")
    name = node.name.lower()
    args = list(node.expressions)
    if any(isinstance(a, (exp.Kwarg, exp.PropertyEQ)) for a in args):
        raise UnsupportedCallError(f"{name}: arguments are positional")
    n_inputs = row_input_count(name, len(args))
    if not args:
        raise UnsupportedCallError(f"{name} needs at least one argument")
    inputs, constants = args[:n_inputs], args[n_inputs:]
    # The row inputs count as arguments (None) so the argument count is checked in one place.
    values = [None] * (len(inputs) - 1) + [_constant(name, a) for a in constants]
    return TaskCall(node, task_spec(name, values), tuple(inputs))


def find_task_calls(tree: exp.Expr) -> list[TaskCall]:
    """Bind every task function call in ``tree``."""
    return [bind_task_call(n) for n in tree.find_all(exp.Anonymous) if is_task_call(n)]


#: How sqlglot parses a MAP literal: ``map('k', v, ...)`` (Databricks, Spark: VarMap),
#: ``map(['k'], [v])`` and ``map('k', v)`` (DuckDB: Map), ``MAP {'k': v}`` (DuckDB: ToMap).
MAP_NODES = (exp.VarMap, exp.Map, exp.ToMap)


def constant_value(function: str, node: exp.Expression) -> Any:
    """The Python value of a task function's constant argument (a literal, ARRAY or MAP).

    Raises:
        UnsupportedCallError: ``node`` is not a constant.
    """
    return _constant(function, node)


def _map_constant(function: str, node: exp.Expression) -> dict[Any, Any]:
    if isinstance(node, exp.ToMap):
        struct = node.this
        return {
            item.this.to_py() if isinstance(item.this, exp.Literal) else item.name: _constant(
                function, item.expression
            )
            for item in struct.expressions
        }
    keys, values = _constant(function, node.args["keys"]), _constant(function, node.args["values"])
    if not isinstance(keys, list):
        keys, values = [keys], [values]
    return dict(zip(keys, values, strict=True))


def _constant(function: str, node: exp.Expression) -> Any:
    if isinstance(node, exp.Literal):
        return node.to_py()
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Array) or (
        isinstance(node, exp.Anonymous) and node.name.lower() == "array"
    ):
        return [_constant(function, item) for item in node.expressions]
    if isinstance(node, exp.Paren):
        return _constant(function, node.this)
    if isinstance(node, MAP_NODES):
        return _map_constant(function, node)
    if isinstance(node, exp.Boolean):
        return node.to_py()
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
        return -_constant(function, node.this)
    raise UnsupportedCallError(
        f"{function}: {node.sql()!r} must be a constant (a literal or ARRAY of literals)"
    )
