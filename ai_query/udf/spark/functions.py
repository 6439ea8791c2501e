"""Typed PySpark DataFrame functions: ``ai_query`` and the task functions as Columns.

SQL gets typed results from Spark's analyzer (:mod:`ai_query.udf.spark.typed`). These
functions give DataFrame users the same types as Python calls, without SQL text::

    from ai_query.udf.spark import functions as AF

    df.select(
        AF.ai_query("smollm2-135m-instruct", "review", returnType="STRUCT<label: STRING>"),
        AF.ai_classify("review", ["positive", "negative"]),
        AF.ai_similarity("a", "b"),
    )

Each returns a Column of the declared Spark type (STRUCT, ARRAY<FLOAT>, FLOAT, ...); columns
are given as Column objects or names, like :mod:`pyspark.sql.functions`. Constant arguments
are checked when the Column is built, before any row runs. The functions use the active
session's registration (:func:`ai_query.udf.spark.register`, done with the defaults on first
use).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

from ai_query.options import ModelParameters
from ai_query.sql.response_format import resolve_output
from ai_query.sql.task_functions import task_spec
from ai_query.sql.types import SQLType, error_struct
from ai_query.udf.spark import SparkAIQuery, registered

ColumnOrName = Column | str

__all__ = [
    "ai_analyze_sentiment",
    "ai_classify",
    "ai_count_tokens",
    "ai_extract",
    "ai_filter",
    "ai_fix_grammar",
    "ai_gen",
    "ai_mask",
    "ai_query",
    "ai_similarity",
    "ai_summarize",
    "ai_translate",
]


def ai_query(
    endpoint: str,
    request: ColumnOrName,
    *,
    # Databricks' argument names, so calls read as in SQL.
    returnType: str | None = None,
    failOnError: bool = True,
    modelParameters: Mapping[str, Any] | None = None,
    responseFormat: str | None = None,
    session: SparkAIQuery | None = None,
) -> Column:
    """``ai_query(endpoint, request, ...)`` as a Column of the call's SQL type.

    Raises:
        ConfigError: an unknown endpoint, bad modelParameters, or a returnType /
            responseFormat the endpoint's task does not allow.
        SQLParseError: a returnType that does not parse.
    """
    aq = session or registered()
    params = ModelParameters.from_value(dict(modelParameters or {}))
    output = resolve_output(returnType, responseFormat, aq.catalog.task_of(endpoint))
    typ = output.sql_type if failOnError else error_struct(output.sql_type)
    text = aq.udfs["ai_query"](
        F.lit(endpoint),
        _col(request),
        F.lit(returnType).cast("string"),
        F.lit(failOnError),
        F.lit(json.dumps(params.to_dict())),
        F.lit(responseFormat).cast("string"),
    )
    return _typed(text, typ)


def ai_count_tokens(
    endpoint: str, text: ColumnOrName, *, session: SparkAIQuery | None = None
) -> Column:
    """``ai_count_tokens(endpoint, text)``: a BIGINT Column of the prompt tokens
    ``ai_query(endpoint, text)`` would read (the endpoint's own tokenizer and chat template),
    with no model call; NULL for a NULL text.

    Raises:
        UnknownEndpointError: an endpoint the catalog does not hold.
    """
    aq = session or registered()
    aq.catalog.get(endpoint)
    return aq.udfs["ai_count_tokens"](F.lit(endpoint), _col(text).cast("string"))


def ai_analyze_sentiment(
    content: ColumnOrName,
    options: Mapping[str, Any] | str | None = None,
    *,
    session: SparkAIQuery | None = None,
) -> Column:
    """``positive``, ``negative``, ``neutral`` or ``mixed`` (STRING; ``options`` as
    :func:`ai_classify`'s)."""
    return _task(session, "ai_analyze_sentiment", [content], _options(options))


def ai_classify(
    content: ColumnOrName,
    labels: Sequence[str] | Mapping[str, str] | str,
    options: Mapping[str, Any] | str | None = None,
    *,
    session: SparkAIQuery | None = None,
) -> Column:
    """One of ``labels`` (a list, a label -> description mapping, or their JSON text).

    ``options`` (a dict or its JSON text), as Databricks' ai_classify takes them:
    ``enableConfidenceScores`` (a STRUCT<label, confidence>), ``multilabel`` (an ARRAY),
    ``instructions``; and ``scoring`` (``auto`` or ``generate``).
    """
    return _task(session, "ai_classify", [content], [_labels(labels), *_options(options)])


def ai_extract(
    content: ColumnOrName,
    labels: Sequence[str] | Mapping[str, Any] | str,
    options: Mapping[str, Any] | str | None = None,
    *,
    session: SparkAIQuery | None = None,
) -> Column:
    """A STRUCT with one field per label (NULL when absent): a list of names (STRING fields),
    or a mapping of names to descriptions or typed fields (``{"type": "integer",
    "description": ...}``, nested ``object``/``array``; :mod:`ai_query.sql.extract_schema`).
    ``options``: ``instructions``; ``enableConfidenceScores`` answers ``STRUCT<response: ...,
    confidence: STRUCT<field: DOUBLE, ...>>``, each field's probability."""
    return _task(session, "ai_extract", [content], [_labels(labels), *_options(options)])


def ai_filter(
    predicate: str | Column,
    content: ColumnOrName | None = None,
    *,
    session: SparkAIQuery | None = None,
) -> Column:
    """Whether the model judges ``predicate`` (about ``content``, when given) true (BOOLEAN).

    A string ``predicate`` is the question itself (not a column name, unlike ``content``);
    build a per-row one as a Column, e.g. ``F.concat(F.lit("Refund? "), "review")``.
    """
    question = F.lit(predicate) if isinstance(predicate, str) else predicate
    return _task(session, "ai_filter", [question] if content is None else [question, content])


def ai_fix_grammar(content: ColumnOrName, *, session: SparkAIQuery | None = None) -> Column:
    """The text with grammar and spelling corrected (STRING)."""
    return _task(session, "ai_fix_grammar", [content])


def ai_gen(prompt: ColumnOrName, *, session: SparkAIQuery | None = None) -> Column:
    """The chat model's answer to ``prompt`` (STRING)."""
    return _task(session, "ai_gen", [prompt])


def ai_mask(
    content: ColumnOrName, labels: Sequence[str], *, session: SparkAIQuery | None = None
) -> Column:
    """The text with each entity of the ``labels`` kinds replaced by ``[MASKED]`` (STRING)."""
    return _task(session, "ai_mask", [content], [_labels(labels)])


def ai_similarity(
    expr1: ColumnOrName, expr2: ColumnOrName, *, session: SparkAIQuery | None = None
) -> Column:
    """Cosine similarity of the two texts' embeddings (FLOAT)."""
    return _task(session, "ai_similarity", [expr1, expr2])


def ai_summarize(
    content: ColumnOrName, max_words: int = 50, *, session: SparkAIQuery | None = None
) -> Column:
    """A summary of at most ``max_words`` words (0: no limit) (STRING)."""
    return _task(session, "ai_summarize", [content], [max_words])


def ai_translate(
    content: ColumnOrName, to_lang: str, *, session: SparkAIQuery | None = None
) -> Column:
    """The text translated to ``to_lang`` (en, de, fr, it, pt, hi, es, th) (STRING)."""
    return _task(session, "ai_translate", [content], [to_lang])


def _task(
    session: SparkAIQuery | None,
    name: str,
    inputs: list[ColumnOrName],
    constants: Sequence[Any] = (),
) -> Column:
    spec = task_spec(name, [*([None] * (len(inputs) - 1)), *constants])  # fails before rows
    aq = session or registered()
    args = [_col(c) for c in inputs] + [F.lit(c) for c in constants]
    return _typed(aq.udfs[name](*args), spec.result_type())


def _labels(labels: Sequence[str] | Mapping[str, str] | str) -> str:
    """Labels as JSON text, the form every task UDF reads."""
    if isinstance(labels, str):
        return labels
    return json.dumps(dict(labels) if isinstance(labels, Mapping) else list(labels))


def _options(options: Mapping[str, Any] | str | None) -> list[str]:
    """The options argument as JSON text (none when not given)."""
    if options is None:
        return []
    return [options if isinstance(options, str) else json.dumps(dict(options))]


def _col(value: ColumnOrName) -> Column:
    return F.col(value) if isinstance(value, str) else value


def _typed(text: Column, typ: SQLType) -> Column:
    """The UDF's text read back as ``typ`` (as :func:`ai_query.sql.transpile` does in SQL)."""
    if typ.is_string:
        return text
    if typ.kind in ("FLOAT", "BOOLEAN"):
        return text.cast(typ.kind.lower())
    ddl = typ.to_ddl("spark")
    if typ.kind in ("ARRAY", "STRUCT", "MAP"):
        return F.from_json(text, ddl)
    return F.from_json(F.concat(F.lit("["), text, F.lit("]")), SQLType.array(typ).to_ddl("spark"))[
        0
    ]
