"""The SQL functions of ai_query on a DuckDB connection: Arrow UDFs behind SQL macros.

:func:`register` installs, on any DuckDB connection::

    ai_query(endpoint, request, returnType := NULL, failOnError := true,
             modelParameters := NULL, responseFormat := NULL, files := NULL)

as a macro (DuckDB Python UDFs take no named arguments; macros do, with ``=>`` or ``:=`` and
any case) over an Arrow UDF that returns VARCHAR: the answer for string results, JSON for typed
ones; with it the task functions, ``ai_agg``, ``ai_count_tokens`` and the vector function.

DuckDB reports an exception raised in a UDF as its own ``InvalidInputException``, keeping only
the text: :class:`UDFErrors` records each UDF's exception so that the connection
(:class:`ai_query.udf.duckdb.AIQueryConnection`) can raise the recorded one instead.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from ai_query.catalog import Catalog
from ai_query.engine.core.protocol import Engine
from ai_query.engine.spec import EngineSpec, get_engine
from ai_query.sql.calls import VECTOR_FUNCTION_NAME
from ai_query.sql.semantic_agg import SUMMARIZE_INSTRUCTION, AggPlan
from ai_query.sql.task_calls import (
    row_input_count,
)
from ai_query.udf.agg_rows import answer_groups
from ai_query.udf.rows import ProgressCallback, answer_rows, answer_vectors, count_tokens
from ai_query.udf.task_rows import AnswerMemo, TaskEndpoints, answer_task_rows

_EXPLAIN_VIEW = "__ai_query_explain"
_ARGS = ["VARCHAR", "VARCHAR", "VARCHAR", "BOOLEAN", "VARCHAR", "VARCHAR", "BLOB"]
_ids = itertools.count()
F = TypeVar("F", bound=Callable[..., Any])


class UDFErrors:
    """The exceptions a connection's UDFs raised, so that DuckDB's error for one (an
    ``InvalidInputException`` that keeps only its text) can be turned back into it."""

    _KEEP = 16
    """How many recent exceptions are kept (DuckDB may run a UDF on several threads)."""

    def __init__(self) -> None:
        self._raised: list[BaseException] = []
        self._lock = threading.Lock()

    def recorded(self, udf: F) -> F:
        """``udf``, recording what it raises (its signature kept: DuckDB counts parameters)."""

        @functools.wraps(udf)
        def recording(*args: Any) -> Any:
            try:
                return udf(*args)
            except Exception as exc:
                with self._lock:
                    self._raised = [*self._raised[-(self._KEEP - 1) :], exc]
                raise

        return recording  # type: ignore[return-value]

    def clear(self) -> None:
        """Forget what was recorded (a new statement starts)."""
        with self._lock:
            self._raised = []

    def original(self, exc: BaseException) -> BaseException | None:
        """The UDF exception that DuckDB's ``exc`` reports, or None when it reports none of
        ours (DuckDB quotes the exception as ``Type: message``: the recorded one must match)."""
        if not isinstance(exc, duckdb.Error):
            return None
        text = str(exc)
        with self._lock:
            raised = list(self._raised)
        for candidate in reversed(raised):
            if f"{type(candidate).__name__}: {candidate}" in text:
                return candidate
        return None

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Run DuckDB statements inside: an error that reports a UDF's exception is raised
        as that exception (chained to DuckDB's); other DuckDB errors pass unchanged."""
        self.clear()
        try:
            yield
        except duckdb.Error as exc:
            original = self.original(exc)
            if original is None:
                raise
            raise original from exc

#: The task functions' SQL macros: (name, parameters, the UDF's arguments, the UDF's argument
#: types, its result type). Labels travel as JSON text, so an ARRAY literal and Databricks'
#: newer JSON-string form reach the UDF alike.
_LABELS = "CAST(to_json(labels) AS VARCHAR)"
_OPTIONS = "CAST(to_json(options) AS VARCHAR)"
#: The constants (after the row inputs) each function's UDF receives as JSON text.
_JSON_CONSTANTS = {"ai_analyze_sentiment": 1, "ai_classify": 2, "ai_extract": 2, "ai_mask": 1}
TASK_MACROS: tuple[tuple[str, str, str, list[str], str], ...] = (
    ("ai_analyze_sentiment", "content", "content", ["VARCHAR"], "VARCHAR"),
    (
        "ai_analyze_sentiment",
        "content, options",
        f"content, {_OPTIONS}",
        ["VARCHAR"] * 2,
        "VARCHAR",
    ),
    ("ai_classify", "content, labels", f"content, {_LABELS}", ["VARCHAR"] * 2, "VARCHAR"),
    (
        "ai_classify",
        "content, labels, options",
        f"content, {_LABELS}, {_OPTIONS}",
        ["VARCHAR"] * 3,
        "VARCHAR",
    ),
    ("ai_extract", "content, labels", f"content, {_LABELS}", ["VARCHAR"] * 2, "VARCHAR"),
    (
        "ai_extract",
        "content, labels, options",
        f"content, {_LABELS}, {_OPTIONS}",
        ["VARCHAR"] * 3,
        "VARCHAR",
    ),
    ("ai_filter", "predicate", "predicate", ["VARCHAR"], "BOOLEAN"),
    ("ai_filter", "predicate, content", "predicate, content", ["VARCHAR"] * 2, "BOOLEAN"),
    ("ai_fix_grammar", "content", "content", ["VARCHAR"], "VARCHAR"),
    ("ai_gen", "prompt", "prompt", ["VARCHAR"], "VARCHAR"),
    ("ai_mask", "content, labels", f"content, {_LABELS}", ["VARCHAR"] * 2, "VARCHAR"),
    ("ai_similarity", "expr1, expr2", "expr1, expr2", ["VARCHAR"] * 2, "FLOAT"),
    (
        "ai_summarize",
        "content, max_words := 50",
        "content, max_words",
        ["VARCHAR", "BIGINT"],
        "VARCHAR",
    ),
    ("ai_translate", "content, to_lang", "content, to_lang", ["VARCHAR"] * 2, "VARCHAR"),
)


class ProgressCounter:
    """Rows and tokens answered so far, updated from DuckDB's worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows = 0
        """Rows answered."""
        self.prompt_tokens = 0
        """Tokens read."""
        self.completion_tokens = 0
        """Tokens generated."""
        self.reasoning_tokens = 0
        """Of the tokens generated, those reasoning models spent reasoning."""
        self.listeners: list[ProgressCallback] = []
        """Called with each increment (e.g. a progress bar's advance)."""
        self._muted = 0

    @contextmanager
    def muted(self) -> Iterator[None]:
        """Count nothing inside (EXPLAIN's stand-in answers are not answers)."""
        with self._lock:
            self._muted += 1
        try:
            yield
        finally:
            with self._lock:
                self._muted -= 1

    def __call__(
        self, rows: int, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int
    ) -> None:
        if self._muted:
            return
        with self._lock:
            self.rows += rows
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.reasoning_tokens += reasoning_tokens
        for listener in list(self.listeners):
            listener(rows, prompt_tokens, completion_tokens, reasoning_tokens)


def register(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog | None = None,
    engine: Engine | None = None,
    *,
    name: str = "ai_query",
    progress: ProgressCallback | None = None,
    agg_plan: AggPlan | None = None,
    errors: UDFErrors | None = None,
    answers: AnswerMemo | None = None,
) -> UDFErrors:
    """Make ``ai_query(...)`` callable in SQL on ``con``.

    Args:
        con: the DuckDB connection.
        catalog: endpoints (default: the bundled ones); ignored when ``engine`` is given.
        engine: the engine rows run on (default: vLLM in this process, shared).
        name: SQL name of the macro.
        progress: called with the number of rows answered after each chunk.
        agg_plan: chunk sizes of ``ai_agg``'s map-reduce (default :class:`AggPlan`).
        errors: where the UDFs record what they raise (default: a new one).
        answers: the task functions' memo of answers given (default: a new one).

    Returns:
        The record of the UDFs' exceptions: run statements inside its
        :meth:`~UDFErrors.translated` to get them back as raised.
    """
    engine = engine or get_engine(EngineSpec.for_catalog(catalog))
    errors = errors or UDFErrors()
    udf_name = f"__ai_query_udf_{next(_ids)}"

    def udf(
        endpoint: pa.Array,
        request: pa.Array,
        return_type: pa.Array,
        fail_on_error: pa.Array,
        model_parameters: pa.Array,
        response_format: pa.Array,
        files: pa.Array,
    ) -> pa.Array:
        texts = answer_rows(
            engine,
            endpoint.to_pylist(),
            request.to_pylist(),
            return_type.to_pylist(),
            fail_on_error.to_pylist(),
            model_parameters.to_pylist(),
            response_format.to_pylist(),
            files=files.to_pylist(),
            progress=progress,
        )
        return pa.array(texts, pa.string())

    con.create_function(
        udf_name, errors.recorded(udf), _ARGS, "VARCHAR", type="arrow", null_handling="special",
        side_effects=True,
    )
    con.execute(
        f"CREATE OR REPLACE TEMP MACRO {name}(endpoint, request, returnType := NULL, "
        "failOnError := true, modelParameters := NULL, responseFormat := NULL, files := NULL) AS "
        f"{udf_name}(endpoint, request, returnType, failOnError, "
        "CAST(to_json(modelParameters) AS VARCHAR), responseFormat, CAST(files AS BLOB))"
    )
    register_vector_function(con, engine, progress, errors=errors)
    register_count_tokens(con, engine, errors=errors)
    register_task_functions(
        con, catalog or engine.catalog, engine, agg_plan=agg_plan, progress=progress,
        errors=errors, memo=answers,
    )
    return errors


def register_vector_function(
    con: duckdb.DuckDBPyConnection,
    engine: Engine,
    progress: ProgressCallback | None = None,
    *,
    errors: UDFErrors | None = None,
) -> None:
    """``__ai_query_vector(endpoint, text) -> FLOAT[]`` on ``con``: what a plain embeddings call
    becomes (:func:`ai_query.sql.transpile.is_plain_embedding`); vectors stay Arrow lists."""

    def udf(endpoint: pa.Array, request: pa.Array) -> pa.Array:
        return answer_vectors(engine, endpoint.to_pylist(), request.to_pylist(), progress=progress)

    udf_name = f"{VECTOR_FUNCTION_NAME}_udf_{next(_ids)}"
    con.create_function(
        udf_name, (errors or UDFErrors()).recorded(udf), ["VARCHAR", "VARCHAR"], "FLOAT[]",
        type="arrow",
        null_handling="special", side_effects=True,
    )
    con.execute(
        f"CREATE OR REPLACE TEMP MACRO {VECTOR_FUNCTION_NAME}(endpoint, request) AS "
        f"{udf_name}(endpoint, request)"
    )


def register_count_tokens(
    con: duckdb.DuckDBPyConnection, engine: Engine, *, errors: UDFErrors | None = None
) -> None:
    """``ai_count_tokens(endpoint, text) -> BIGINT`` on ``con``: the prompt tokens
    ``ai_query(endpoint, text)`` would read, counted with the endpoint's own tokenizer (and chat
    template), with no model call (:func:`ai_query.udf.rows.count_tokens`)."""

    def udf(endpoint: pa.Array, text: pa.Array) -> pa.Array:
        return pa.array(count_tokens(engine, endpoint.to_pylist(), text.to_pylist()), pa.int64())

    udf_name = f"__ai_count_tokens_udf_{next(_ids)}"
    con.create_function(
        udf_name, (errors or UDFErrors()).recorded(udf), ["VARCHAR", "VARCHAR"], "BIGINT",
        type="arrow", null_handling="special", side_effects=True,
    )
    con.execute(
        f"CREATE OR REPLACE TEMP MACRO ai_count_tokens(endpoint, text) AS {udf_name}(endpoint, "
        "CAST(text AS VARCHAR))"
    )


def register_task_functions(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    engine: Engine,
    *,
    agg_plan: AggPlan | None = None,
    progress: ProgressCallback | None = None,
    errors: UDFErrors | None = None,
    memo: AnswerMemo | None = None,
) -> None:
    """Make the task functions (``ai_classify``, ``ai_similarity``, ...) callable on ``con``.

    Each is a macro over an Arrow UDF; results are the UDF's type (``ai_extract`` returns its
    STRUCT as JSON text here; :class:`AIQueryConnection` casts it to the STRUCT). A function
    with several signatures (``ai_filter`` with and without content) is one overloaded macro.
    ``progress`` is told the rows each call went through, as ``ai_query``'s are.
    """
    errors = errors or UDFErrors()
    endpoints = TaskEndpoints.from_catalog(catalog)
    memo = memo if memo is not None else AnswerMemo()
    overloads: dict[str, list[str]] = {}
    for name, params, args, arg_types, result in TASK_MACROS:
        udf_name = f"__{name}_udf_{next(_ids)}"
        udf = _task_udf(engine, endpoints, name, result, len(arg_types), memo, progress)
        con.create_function(
            udf_name, errors.recorded(udf), arg_types, result, type="arrow",
            null_handling="special", side_effects=True,
        )
        overloads.setdefault(name, []).append(f"({params}) AS {udf_name}({args})")
    for name, bodies in overloads.items():
        con.execute(f"CREATE OR REPLACE TEMP MACRO {name}{', '.join(bodies)}")
    register_aggregates(con, endpoints, engine, agg_plan or AggPlan(), progress, errors=errors)


def register_aggregates(
    con: duckdb.DuckDBPyConnection,
    endpoints: TaskEndpoints,
    engine: Engine,
    plan: AggPlan,
    progress: ProgressCallback | None = None,
    *,
    errors: UDFErrors | None = None,
) -> None:
    """``ai_agg(expr, instruction)`` and ``ai_summarize_agg(expr)`` on ``con``: macros over a
    scalar UDF of ``list(expr)``, so they aggregate wherever ``list`` does (``GROUP BY``, the
    whole table) and DuckDB needs no Python aggregate."""

    def udf(rows: pa.Array, instruction: pa.Array) -> pa.Array:
        endpoint = endpoints.endpoint_for("ai_agg")
        answers = answer_groups(engine, endpoint, rows.to_pylist(), instruction.to_pylist(), plan)
        _report(progress, answers)
        return pa.array(answers, pa.string())

    udf_name = f"__ai_agg_udf_{next(_ids)}"
    con.create_function(
        udf_name, (errors or UDFErrors()).recorded(udf), ["VARCHAR[]", "VARCHAR"], "VARCHAR",
        type="arrow",
        null_handling="special", side_effects=True,
    )
    rows = "list(CAST(expr AS VARCHAR))"
    con.execute(
        f"CREATE OR REPLACE TEMP MACRO ai_agg(expr, instruction) AS {udf_name}({rows}, "
        "instruction)"
    )
    instruction = SUMMARIZE_INSTRUCTION.replace("'", "''")
    con.execute(
        f"CREATE OR REPLACE TEMP MACRO ai_summarize_agg(expr) AS {udf_name}({rows}, "
        f"'{instruction}')"
    )


def _task_udf(
    engine: Engine, endpoints: TaskEndpoints, name: str, result: str, arity: int,
    memo: AnswerMemo, progress: ProgressCallback | None,
) -> Any:
    n_inputs = row_input_count(name, arity)
    arrow_type = {"FLOAT": pa.float32(), "BOOLEAN": pa.bool_()}.get(result, pa.string())

    def answer(*columns: pa.Array) -> pa.Array:
        values = [column.to_pylist() for column in columns]
        constants = [
            [_json_or_none(v) for v in column] if i < _JSON_CONSTANTS.get(name, 0) else column
            for i, column in enumerate(values[n_inputs:])
        ]
        out = answer_task_rows(engine, endpoints, name, values[:n_inputs], constants, memo)
        _report(progress, out)
        return pa.array(out, arrow_type)

    # DuckDB counts a UDF's parameters, so each arity gets its own signature.
    def one(a: pa.Array) -> pa.Array:
        return answer(a)

    def two(a: pa.Array, b: pa.Array) -> pa.Array:
        return answer(a, b)

    def three(a: pa.Array, b: pa.Array, c: pa.Array) -> pa.Array:
        return answer(a, b, c)

    return {1: one, 2: two, 3: three}[arity]


def _report(progress: ProgressCallback | None, answers: list[Any]) -> None:
    """Tell ``progress`` the rows a call went through (as ``ai_query`` counts them)."""
    if progress is not None:
        progress(len(answers), 0, 0, 0)


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)
