"""``ai_query`` in DuckDB: an Arrow UDF behind a SQL macro, and a connection that rewrites.

:func:`register` installs, on any DuckDB connection::

    ai_query(endpoint, request, returnType := NULL, failOnError := true,
             modelParameters := NULL, responseFormat := NULL)

as a macro (DuckDB Python UDFs take no named arguments; macros do, with ``=>`` or ``:=`` and
any case) over an Arrow UDF that returns VARCHAR: the answer for string results, JSON for typed
ones. :class:`AIQueryConnection` (what :func:`connect` returns) also rewrites each statement
through :func:`ai_query.sql.transpile`, so typed calls come back as real DuckDB types
(``FLOAT[]`` for embeddings, ``STRUCT(...)`` for ``returnType`` and ``failOnError => false``),
and bad calls fail before any row runs.

DuckDB reports an exception raised in a UDF as its own ``InvalidInputException``, keeping only
the text; :meth:`AIQueryConnection.errors` (used by ``sql``/``execute`` and by every caller
that fetches) raises what the UDF raised instead (a :class:`~ai_query.errors.RowError` for a
failed row, say). The functions themselves are registered by :mod:`.functions`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ai_query.catalog import Catalog
from ai_query.engine.core.budget import (
    Allowance,
    Budget,
    BudgetedEngine,
    check_estimate,
    parse_budget,
)
from ai_query.engine.core.protocol import Engine
from ai_query.engine.recording import RecordingEngine
from ai_query.engine.spec import EngineSpec, get_engine
from ai_query.errors import SQLError
from ai_query.sql import transpile
from ai_query.sql.task_calls import (
    answers_deciding_rows,
    explained_statement,
    mentions_ai_functions,
    reads_only,
)
from ai_query.sql.transpile import parse_sql
from ai_query.udf.duckdb.functions import (
    ProgressCounter,
    UDFErrors,
    register,
    register_task_functions,
)
from ai_query.udf.explain import EngineSwitch, estimated_spend, explain_calls
from ai_query.udf.task_rows import AnswerMemo
from ai_query.udf.usage import MeteredEngine, UsageHistory
from ai_query.udf.vector_index import load_indexes

__all__ = ["AIQueryConnection", "UDFErrors", "connect", "register", "register_task_functions"]

_EXPLAIN_VIEW = "__ai_query_explain"
#: The DuckDB variables that set a statement's budget (``SET VARIABLE ai_query_max_tokens = 1e5``).
BUDGET_VARIABLES = {"max_tokens": "ai_query_max_tokens", "max_cost": "ai_query_max_cost"}


class AIQueryConnection:
    """A DuckDB connection whose ``sql``/``execute``/``query`` understand every ai_query form.

    Everything else is the DuckDB connection's own (attribute access is forwarded); ``raw`` is
    the underlying ``duckdb.DuckDBPyConnection``. An ai_query function's failure comes out as
    its own error (a :class:`~ai_query.errors.RowError`, say), not DuckDB's wrapper, from
    ``execute``; ``sql`` returns DuckDB's lazy relation, so fetch it inside :meth:`errors`.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        catalog: Catalog,
        engine: Engine,
        history: UsageHistory | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.raw = con
        self.catalog = catalog
        self.engine = engine
        self.progress = ProgressCounter()
        self.history = history or UsageHistory()
        """This machine's usage history: the connection's calls add to it, EXPLAIN reads it."""
        self.budget = budget or Budget()
        """Each statement's budget unless the DuckDB variables in :data:`BUDGET_VARIABLES`
        set one (``ai-query sql --max-tokens`` sets this)."""
        self._metered = MeteredEngine(engine, self.history)
        self._budgeted = BudgetedEngine(self._metered)
        self._switch = EngineSwitch(self._budgeted)
        self._answers = AnswerMemo()
        self.udf_errors = register(
            con, catalog, self._switch, progress=self.progress, answers=self._answers
        )
        """What this connection's UDFs raised (see :meth:`errors`)."""

    def explain(self, query: str, read: str = "duckdb") -> pa.Table:
        """What the AI calls of ``query`` would send, read and cost, with no model call: one
        row per call (see :mod:`ai_query.udf.explain`). The statement runs on its own plan
        against stand-in answers, so predicates and limits act as they will."""
        statement = self.rewrite(query, read=read)
        deciding = set().union(*(answers_deciding_rows(t) for t in parse_sql(query, read)))
        recorder = RecordingEngine(self.catalog)
        try:
            with self._switch.using(recorder), self.progress.muted(), self.errors(), \
                    self._undone(query, read):
                relation = self.raw.sql(statement)
                if relation is not None:
                    relation.to_arrow_table()
        finally:
            self._answers.clear()  # stand-in answers must not answer a later statement
        return explain_calls(
            recorder.calls(), self._metered, self.catalog, self.history,
            deciding=deciding,
        )

    @contextmanager
    def _undone(self, query: str, read: str) -> Iterator[None]:
        """Inside, what the statement writes is undone afterwards (a transaction rolled back);
        a statement that only reads may run inside the caller's open transaction."""
        if all(reads_only(tree) for tree in parse_sql(query, read)):
            yield
            return
        if self._in_transaction():
            raise SQLError(
                "EXPLAIN of a statement that writes runs it in a transaction it rolls back: "
                "commit or roll back the open transaction first"
            )
        self.raw.execute("BEGIN TRANSACTION")
        try:
            yield
        finally:
            self.raw.execute("ROLLBACK")

    def _in_transaction(self) -> bool:
        """Whether the caller has a transaction open (two statements then share its id)."""
        probe = "SELECT txid_current()"
        return bool(self.raw.sql(probe).fetchall() == self.raw.sql(probe).fetchall())

    def statement_budget(self) -> Budget:
        """The budget of the next statement: the DuckDB variables of :data:`BUDGET_VARIABLES`
        where set (``SET VARIABLE ai_query_max_cost = 2.5``), else :attr:`budget`."""
        names = list(BUDGET_VARIABLES.values())
        values = self.raw.sql(
            "SELECT " + ", ".join(f"getvariable('{n}')" for n in names)
        ).fetchall()[0]
        given = {
            field: value
            for (field, name), value in zip(BUDGET_VARIABLES.items(), values, strict=True)
            if value is not None
        }
        parsed = parse_budget(given, BUDGET_VARIABLES)
        return self.budget.model_copy(update={k: getattr(parsed, k) for k in given})

    def prepare(self, query: str, read: str = "duckdb") -> str:
        """The statement DuckDB runs for ``query``: a select of its explanation for an EXPLAIN
        of AI calls; else the rewritten statement, checked against its budget (refused when
        its estimate is over; else its AI calls send rows only while they fit)."""
        inner = explained_statement(query)
        if inner is not None:
            self.raw.register(_EXPLAIN_VIEW, self.explain(inner, read=read))
            return f"SELECT * FROM {_EXPLAIN_VIEW}"
        statement = self.rewrite(query, read=read)
        if not mentions_ai_functions(query):
            return statement
        budget = self.statement_budget()
        if budget.limited:
            tokens, cost, what = estimated_spend(self.explain(query, read=read))
            check_estimate(budget, tokens, cost, what)
        self.limit(budget, "the query")
        return statement

    def limit(self, budget: Budget, scope: str) -> Allowance:
        """Hold the AI calls from now on to ``budget`` together (``scope`` names who spends
        it in the row error: a query, a job's run); returns what they spend."""
        self._budgeted.allowance = Allowance(budget, scope)
        return self._budgeted.allowance

    @property
    def spent(self) -> Allowance | None:
        """What the latest statement with AI calls has spent (tokens, cost), under its budget."""
        return self._budgeted.allowance

    def errors(self) -> AbstractContextManager[None]:
        """A context in which DuckDB's error for an ai_query function's failure is raised as
        that failure (``with con.errors(): con.sql(q).fetchall()``); other errors unchanged."""
        return self.udf_errors.translated()

    def rewrite(self, query: str, read: str = "duckdb") -> str:
        """The statement DuckDB runs for ``query`` (unchanged when it has no ai_query call)."""
        if read == "duckdb" and not mentions_ai_functions(query):
            return query
        indexes = load_indexes(self.raw) if "vector_search" in query.lower() else {}
        return transpile(
            query, read=read, write="duckdb", catalog=self.catalog, vector_indexes=indexes
        )

    def sql(self, query: str, **kwargs: Any) -> Any:
        """Run ``query`` (DuckDB SQL) like ``DuckDBPyConnection.sql`` (a lazy relation for a
        query: fetch it inside :meth:`errors` to get ai_query's errors as raised)."""
        statement = self.prepare(query)
        with self.errors():
            return self.raw.sql(statement, **kwargs)

    query = sql

    def execute(self, query: str, parameters: Any = None) -> AIQueryConnection:
        """Run ``query`` like ``DuckDBPyConnection.execute``; returns this connection."""
        statement = self.prepare(query)
        with self.errors():
            self.raw.execute(statement, parameters)
        return self

    def databricks_sql(self, query: str, **kwargs: Any) -> Any:
        """Run a query written in Databricks SQL (lazy, as :meth:`sql`)."""
        statement = self.prepare(query, read="databricks")
        with self.errors():
            return self.raw.sql(statement, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def __enter__(self) -> AIQueryConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()

    def close(self) -> None:
        """Close the DuckDB connection (the shared engine stays up for other callers)."""
        self.raw.close()


def connect(
    database: str = ":memory:",
    catalog: Catalog | str | Path | None = None,
    *,
    engine: Engine | None = None,
    budget: Budget | None = None,
    **config: Any,
) -> AIQueryConnection:
    """A DuckDB connection with ``ai_query`` ready; see :func:`ai_query.connect`."""
    if isinstance(catalog, (str, Path)):
        catalog = Catalog.load(catalog)
    if engine is not None:
        catalog = engine.catalog
    catalog = catalog or Catalog.default()
    engine = engine or get_engine(EngineSpec.for_catalog(catalog))
    return AIQueryConnection(
        duckdb.connect(database, config=config or {}), catalog, engine, budget=budget
    )
