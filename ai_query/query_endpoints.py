"""The endpoints a SQL text will call, read before it runs, so their models can start early.

``ai-query sql`` and the demo name them to their private engine server as soon as the text is
parsed (:func:`start_early`): the server starts and loads those models while DuckDB is imported,
plans and reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp

from ai_query.catalog import Catalog
from ai_query.engine.core.protocol import Engine
from ai_query.errors import AIQueryError
from ai_query.sql.calls import bind_call, is_ai_query
from ai_query.sql.transpile import check_calls, parse_sql
from ai_query.udf.task_rows import TaskEndpoints


def endpoints_in_sql(sql: str, read: str, catalog: Catalog) -> list[str]:
    """The endpoints that ``sql``'s ``ai_query`` calls and AI functions name, in order.

    None when the query would fail before any row runs (it does not parse, or a call is bad:
    an unknown endpoint, a bad parameter or return type), so a bad query starts no model.
    ``vector_search`` is not read (its endpoint is in the database).
    """
    try:
        trees = parse_sql(sql, read)
        for tree in trees:
            check_calls(tree, catalog)
    except AIQueryError:
        return []
    functions = TaskEndpoints.from_catalog(catalog).endpoints
    names: list[str] = []
    for tree in trees:
        for node in tree.find_all(exp.Anonymous):
            if is_ai_query(node):
                names.append(bind_call(node).endpoint)
            elif node.name.lower() in functions:
                names.append(functions[node.name.lower()])
    return list(dict.fromkeys(names))


def start_early(engine: Engine, statements: Iterable[tuple[str, str]]) -> None:
    """Start ``engine``'s private server now, and then the models that ``statements`` (SQL
    text, read dialect) call, in the background: they load while the caller plans and reads.

    Only a private server (:class:`~ai_query.engine.process.embedded.EmbeddedEngine`) is started
    here;
    other engines start their models with their first batch. Statements that call no model, or
    would fail before any row runs, start nothing.
    """
    from ai_query.engine.process.embedded import EmbeddedEngine

    if not isinstance(engine, EmbeddedEngine):
        return
    names = [n for sql, read in statements for n in endpoints_in_sql(sql, read, engine.catalog)]
    if names:
        engine.start_in_background(names)
