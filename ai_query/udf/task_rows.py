"""What a task function UDF (``ai_classify``, ``ai_similarity``, ...) does with a chunk of rows.

Shared by DuckDB and Spark. Rows are grouped by their constant arguments (labels, language,
word limit), each group's arguments are checked once (:func:`ai_query.sql.task_functions.
task_spec`), and the group goes to the catalog's task function endpoint as one request batch.
A NULL input gives a NULL result without a model call; the first failed row fails the query
(Databricks' task functions have no failOnError). ``ai_filter`` sends each distinct
(predicate, content) once, and remembers answers in a caller's :class:`AnswerMemo`, so a join's
repeated pairs run once even when they reach the UDF in different chunks.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ai_query.catalog import Catalog
from ai_query.engine.core.batch import align_results, raise_first_error, request_batch
from ai_query.engine.core.protocol import Engine
from ai_query.errors import ConfigError, RowError
from ai_query.options import CallOptions, ModelParameters
from ai_query.sql.semantic_agg import AGGREGATE_FUNCTIONS
from ai_query.sql.task_functions import (
    MULTILABEL_SHARE,
    SCORED_FUNCTIONS,
    TASK_FUNCTIONS,
    TaskSpec,
    task_spec,
)
from ai_query.udf.label_scores import CONTENT_FREE, LabelChoice, choose_labels


@dataclass(frozen=True)
class TaskEndpoints:
    """The endpoint that answers each task function, resolved once from a catalog (picklable,
    so Spark workers carry it instead of the catalog)."""

    endpoints: dict[str, str] = field(default_factory=dict)
    """Function name -> endpoint name."""
    problems: dict[str, str] = field(default_factory=dict)
    """Function name -> why no endpoint answers it (raised when the function is called)."""

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> TaskEndpoints:
        """Resolve every task function's endpoint (see :meth:`Catalog.task_function_endpoint`)."""
        endpoints, problems = {}, {}
        for name in (*TASK_FUNCTIONS, *AGGREGATE_FUNCTIONS):
            task = task_spec_task(name)
            try:
                endpoints[name] = catalog.task_function_endpoint(name, task)
            except ConfigError as exc:
                problems[name] = str(exc)
        return cls(endpoints, problems)

    def endpoint_for(self, function: str) -> str:
        """The endpoint of ``function``; raises ConfigError when the catalog has none."""
        if function not in self.endpoints:
            raise ConfigError(self.problems.get(function, f"no endpoint answers {function}"))
        return self.endpoints[function]


class AnswerMemo:
    """Answers already given, by (endpoint, prompt); bounded (the oldest go first), shared by
    the threads of one registration."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        """How many answers are kept."""
        self._answers: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Any:
        """The remembered answer, or None."""
        with self._lock:
            return self._answers.get(key)

    def clear(self) -> None:
        """Forget every answer."""
        with self._lock:
            self._answers.clear()

    def put(self, key: tuple[str, str], value: Any) -> None:
        """Remember an answer."""
        with self._lock:
            self._answers[key] = value
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)


def task_spec_task(function: str) -> str:
    """The endpoint task that answers ``function``."""
    return TaskSpec(function=function).task


def answer_task_rows(
    engine: Engine,
    endpoints: TaskEndpoints,
    function: str,
    inputs: Sequence[Sequence[str | None]],
    constants: Sequence[Sequence[Any]] = (),
    memo: AnswerMemo | None = None,
) -> list[Any]:
    """Answer a chunk of task function rows; one result per row, in order.

    Args:
        engine: the engine rows run on.
        endpoints: the endpoint of each function.
        function: the task function's name.
        inputs: the per-row texts: one column (content), two for ai_similarity.
        constants: the remaining arguments, one column each (labels, to_lang, max_words).
        memo: answers given before (ai_filter), read and filled.

    Returns:
        Text for STRING results, JSON text for ai_extract's STRUCT, a float for
        ai_similarity; None for a NULL input.

    Raises:
        ConfigError: bad arguments (checked before the group's rows run), or no endpoint.
        RowError: the first row that failed, naming the endpoint and the cause.
    """
    n = len(inputs[0])
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in range(n):
        key = tuple(_hashable(column[i]) for column in constants)
        groups.setdefault(key, []).append(i)
    out: list[Any] = [None] * n
    for key, rows in groups.items():
        placeholders = [None] * (len(inputs) - 1)
        spec = task_spec(function, [*placeholders, *(_plain(v) for v in key)])
        endpoint = endpoints.endpoint_for(spec.function)
        columns = [[column[i] for i in rows] for column in inputs]
        if spec.function == "ai_similarity":
            values: list[Any] = _similarities(engine, endpoint, columns[0], columns[1], rows[0])
        elif spec.function == "ai_filter":
            values = _filter(engine, endpoint, spec, columns, rows, memo)
        elif spec.function in SCORED_FUNCTIONS:
            embeddings = endpoints.endpoints.get("ai_similarity")
            values = _choose(engine, endpoint, embeddings, spec, columns[0], rows)
        else:
            values = _chat(engine, endpoint, spec, columns[0], rows)
        for i, value in zip(rows, values, strict=True):
            out[i] = value
    return out


def _chat(
    engine: Engine, endpoint: str, spec: TaskSpec, contents: list[str | None], rows: list[int]
) -> list[Any]:
    options = CallOptions(
        endpoint=endpoint,
        model_parameters=ModelParameters(max_tokens=spec.max_tokens()),
        return_type=spec.return_type(),
        response_format=spec.response_format(),
    )
    prompts = [None if c is None else spec.prompt(c) for c in contents]
    answers = _run(engine, prompts, options, rows[0])
    out: list[Any] = []
    for row, content, answer in zip(rows, contents, answers, strict=True):
        if content is None or answer is None:
            out.append(None)
            continue
        try:
            value = spec.finish(content, answer)
        except ValueError as exc:
            raise RowError(str(exc), row, endpoint) from exc
        out.append(json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value)
    return out


def _choose(
    engine: Engine,
    endpoint: str,
    embeddings: str | None,
    spec: TaskSpec,
    contents: list[str | None],
    rows: list[int],
) -> list[Any]:
    """Labels chosen by scoring (:mod:`ai_query.udf.label_scores`); None for a NULL content."""
    present = [i for i, c in enumerate(contents) if c is not None]
    texts = [str(contents[i]) for i in present]
    options = CallOptions(
        endpoint=endpoint,
        model_parameters=ModelParameters(max_tokens=spec.max_tokens()),
        response_format=spec.scored_format(),
    )

    def run(requests: list[str | None], call: CallOptions) -> list[Any]:
        return _run(engine, requests, call, rows[0])

    chosen = (
        choose_labels(
            run,
            spec.choices() or (),
            [spec.prompt(t) for t in texts],
            [spec.prompt(t) for t in CONTENT_FREE],
            options,
            contents=texts,
            label_texts=spec.label_texts(),
            embeddings=embeddings if spec.scoring != "generate" else None,
            refine=spec.scoring == "auto",
        )
        if texts
        else []
    )
    out: list[Any] = [None] * len(contents)
    for i, choice in zip(present, chosen, strict=True):
        out[i] = _label_answer(spec, choice)
    return out


def _label_answer(spec: TaskSpec, choice: LabelChoice) -> str:
    """The label as the function returns it (JSON text for a STRUCT or ARRAY result)."""
    if not spec.multilabel and not spec.confidence:
        return choice.label
    answers: list[Any] = [
        {"label": label, "confidence": p} if spec.confidence else label
        for label, p in (
            choice.fitting(spec.choices() or (), MULTILABEL_SHARE)
            if spec.multilabel
            else [(choice.label, choice.confidence)]
        )
    ]
    return json.dumps(answers if spec.multilabel else answers[0], ensure_ascii=False)


def _filter(
    engine: Engine,
    endpoint: str,
    spec: TaskSpec,
    columns: list[list[str | None]],
    rows: list[int],
    memo: AnswerMemo | None,
) -> list[bool | None]:
    """ai_filter's answers: each distinct prompt asked once (and not again when remembered)."""
    predicates = columns[0]
    contents = columns[1] if len(columns) > 1 else [""] * len(predicates)
    prompts: list[str | None] = [
        None if p is None or c is None else spec.filter_prompt(p, c if len(columns) > 1 else None)
        for p, c in zip(predicates, contents, strict=True)
    ]
    known: dict[str, bool | None] = {}
    todo: list[str] = []
    for prompt in prompts:
        if prompt is None or prompt in known:
            continue
        remembered = memo.get((endpoint, prompt)) if memo is not None else None
        known[prompt] = remembered
        if remembered is None:
            todo.append(prompt)
    if todo:
        options = CallOptions(
            endpoint=endpoint,
            model_parameters=ModelParameters(max_tokens=spec.max_tokens()),
            response_format=spec.response_format(),
        )
        answers = _run(engine, list(todo), options, rows[0])
        for prompt, answer in zip(todo, answers, strict=True):
            value = None if answer is None else spec.finish(prompt, answer)
            known[prompt] = value
            if memo is not None and value is not None:
                memo.put((endpoint, prompt), value)
    return [None if p is None else known[p] for p in prompts]


def _similarities(
    engine: Engine,
    endpoint: str,
    left: list[str | None],
    right: list[str | None],
    offset: int,
) -> list[float | None]:
    vectors = _run(engine, [*left, *right], CallOptions(endpoint=endpoint), offset)
    n = len(left)
    out: list[float | None] = []
    for a, b in zip(vectors[:n], vectors[n:], strict=True):
        if a is None or b is None:
            out.append(None)
            continue
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        norm = float(np.linalg.norm(x) * np.linalg.norm(y))
        out.append(float(np.dot(x, y) / norm) if norm else 0.0)
    return out


def _run(
    engine: Engine, requests: list[str | None], options: CallOptions, offset: int
) -> list[Any]:
    result = align_results(engine.run(request_batch(requests, options)), len(requests))
    raise_first_error(result, options.endpoint, offset)
    column: pa.Array = result.column("result")
    return column.to_pylist()


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):  # a MAP options argument (Spark): as its JSON text
        return json.dumps({str(k): v for k, v in value.items()})
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
