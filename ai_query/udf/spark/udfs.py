"""The Spark UDFs, as they run in Spark's Python workers: ai_query's text UDF, the vector UDF of
plain embeddings calls, the task functions' UDFs and ai_agg's. Each captures only a picklable
:class:`~ai_query.engine.spec.EngineSpec` (and the task functions' endpoints); the engine client
is built once per worker process (:func:`ai_query.engine.spec.get_engine`).
"""

from __future__ import annotations

import decimal
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql.functions import arrow_udf, pandas_udf

from ai_query.catalog import Catalog
from ai_query.engine.spec import EngineSpec, get_engine
from ai_query.sql.calls import VECTOR_FUNCTION_NAME
from ai_query.sql.semantic_agg import SPARK_AGG_UDF
from ai_query.udf.agg_rows import answer_groups
from ai_query.udf.rows import answer_rows, answer_vectors, count_tokens
from ai_query.udf.task_rows import AnswerMemo, TaskEndpoints, answer_task_rows

#: ai_filter's remembered answers in this (worker) process, per engine.
_memos: dict[EngineSpec, AnswerMemo] = {}


def text_udf(spec: EngineSpec) -> Any:
    """The pandas UDF; it captures only ``spec`` (the client is built in each worker)."""

    # Parameters default to None so that Spark accepts 2 to 7 arguments, positional or named.
    def ai_query(
        endpoint: pd.Series,
        request: pd.Series,
        returnType: pd.Series = None,  # type: ignore[assignment]
        failOnError: pd.Series = None,  # type: ignore[assignment]
        modelParameters: pd.Series = None,  # type: ignore[assignment]
        responseFormat: pd.Series = None,  # type: ignore[assignment]
        files: pd.Series = None,  # type: ignore[assignment]
    ) -> pd.Series:
        return answer_series(
            spec, endpoint, request, returnType, failOnError, modelParameters, responseFormat,
            files,
        )

    return pandas_udf(ai_query, "string")  # type: ignore[call-overload]


def vector_udf(spec: EngineSpec) -> Any:
    """``__ai_query_vector(endpoint, text) -> ARRAY<FLOAT>``, what a plain embeddings call
    becomes: an Arrow UDF, so vectors stay Arrow lists from the engine to Spark."""

    def ai_query_vector(endpoint: pa.Array, request: pa.Array) -> pa.Array:
        return answer_vectors(get_engine(spec), endpoint.to_pylist(), request.to_pylist())

    return arrow_udf(ai_query_vector, "array<float>")  # type: ignore[call-overload]


def count_tokens_udf(spec: EngineSpec) -> Any:
    """``ai_count_tokens(endpoint, text) -> BIGINT``: the prompt tokens ``ai_query(endpoint,
    text)`` would read, from the engine's preview (the endpoint's tokenizer), no model call."""

    def ai_count_tokens(endpoint: pa.Array, text: pa.Array) -> pa.Array:
        counted = count_tokens(get_engine(spec), endpoint.to_pylist(), text.to_pylist())
        return pa.array(counted, pa.int64())

    return arrow_udf(ai_count_tokens, "bigint")  # type: ignore[call-overload]


def spark_udfs(spec: EngineSpec, catalog: Catalog) -> dict[str, Any]:
    """Every UDF of the SQL functions, by function name, bound to ``spec``."""
    return {
        "ai_query": text_udf(spec),
        VECTOR_FUNCTION_NAME: vector_udf(spec),
        "ai_count_tokens": count_tokens_udf(spec),
        **task_udfs(spec, TaskEndpoints.from_catalog(catalog)),
    }


def answer_series(
    spec: EngineSpec,
    endpoint: pd.Series,
    request: pd.Series,
    return_type: pd.Series | None = None,
    fail_on_error: pd.Series | None = None,
    model_parameters: pd.Series | pd.DataFrame | None = None,
    response_format: pd.Series | None = None,
    files: pd.Series | None = None,
) -> pd.Series:
    """Answer one Spark Arrow batch of ai_query rows (runs in a Python worker)."""
    n = len(request)
    texts = answer_rows(
        get_engine(spec),
        _values(endpoint, n),
        _values(request, n),
        _values(return_type, n),
        _values(fail_on_error, n),
        _params_json(model_parameters, n),
        _values(response_format, n),
        files=None if files is None else _blobs(files, n),
    )
    return pd.Series(texts, dtype=object)


def _values(series: pd.Series | None, n: int) -> list[Any]:
    """Plain Python values with None for every kind of missing value (pandas 3 uses NaN)."""
    if series is None:
        return [None] * n
    return [None if _missing(v) else _plain(v) for v in series.tolist()]


def _blobs(series: pd.Series, n: int) -> list[bytes | None]:
    """A BINARY column's values as bytes (Spark gives bytearray), None where missing."""
    return [None if v is None else bytes(v) for v in _values(series, n)]


def _params_json(params: pd.Series | pd.DataFrame | None, n: int) -> list[str | None]:
    """modelParameters as JSON text: a named_struct arrives as a DataFrame, JSON as strings."""
    if params is None:
        return [None] * n
    if isinstance(params, pd.DataFrame):
        out: list[str | None] = []
        for record in params.to_dict("records"):
            clean = {str(k): _plain(v) for k, v in record.items() if not _missing(v)}
            out.append(json.dumps(clean) if clean else None)
        return out
    return _values(params, n)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def task_udfs(spec: EngineSpec, endpoints: TaskEndpoints) -> dict[str, Any]:
    """The task functions' pandas UDFs, by SQL name (``ai_extract`` returns its STRUCT as JSON
    text; :meth:`SparkAIQuery.sql` reads it back as the STRUCT)."""

    def run(name: str, inputs: list[pd.Series], constants: list[pd.Series | None]) -> pd.Series:
        n = len(inputs[0])
        out = answer_task_rows(
            get_engine(spec),
            endpoints,
            name,
            [_values(s, n) for s in inputs],
            [_values(s, n) for s in constants],
            _memos.setdefault(spec, AnswerMemo()),
        )
        return pd.Series(out, dtype=object)

    def ai_analyze_sentiment(
        content: pd.Series,
        options: pd.Series = None,  # type: ignore[assignment]
    ) -> pd.Series:
        return run("ai_analyze_sentiment", [content], [] if options is None else [options])

    def ai_classify(
        content: pd.Series,
        labels: pd.Series,
        options: pd.Series = None,  # type: ignore[assignment]
    ) -> pd.Series:
        return run("ai_classify", [content], [labels] if options is None else [labels, options])

    def ai_extract(
        content: pd.Series,
        labels: pd.Series,
        options: pd.Series = None,  # type: ignore[assignment]
    ) -> pd.Series:
        return run("ai_extract", [content], [labels] if options is None else [labels, options])

    def ai_filter(
        predicate: pd.Series,
        content: pd.Series = None,  # type: ignore[assignment]
    ) -> pd.Series:
        inputs = [predicate] if content is None else [predicate, content]
        return run("ai_filter", inputs, []).astype("boolean")

    def ai_fix_grammar(content: pd.Series) -> pd.Series:
        return run("ai_fix_grammar", [content], [])

    def ai_gen(prompt: pd.Series) -> pd.Series:
        return run("ai_gen", [prompt], [])

    def ai_mask(content: pd.Series, labels: pd.Series) -> pd.Series:
        return run("ai_mask", [content], [labels])

    def ai_similarity(expr1: pd.Series, expr2: pd.Series) -> pd.Series:
        return run("ai_similarity", [expr1, expr2], []).astype("float32")

    def ai_summarize(
        content: pd.Series,
        max_words: pd.Series = None,  # type: ignore[assignment]
    ) -> pd.Series:
        return run("ai_summarize", [content], [max_words] if max_words is not None else [])

    def ai_translate(content: pd.Series, to_lang: pd.Series) -> pd.Series:
        return run("ai_translate", [content], [to_lang])

    functions = (
        ai_analyze_sentiment, ai_classify, ai_extract, ai_filter, ai_fix_grammar, ai_gen,
        ai_mask, ai_similarity, ai_summarize, ai_translate,
    )
    types = {"ai_similarity": "float", "ai_filter": "boolean"}
    udfs = {
        f.__name__: pandas_udf(f, types.get(f.__name__, "string"))  # type: ignore[call-overload]
        for f in functions
    }

    def ai_agg_rows(rows: pd.Series, instruction: pd.Series) -> pd.Series:
        groups = [None if _missing(v) else _plain(v) for v in rows.tolist()]
        out = answer_groups(
            get_engine(spec), endpoints.endpoint_for("ai_agg"), groups,
            _values(instruction, len(rows)),
        )
        return pd.Series(out, dtype=object)

    udfs[SPARK_AGG_UDF] = pandas_udf(ai_agg_rows, "string")  # type: ignore[call-overload]
    return udfs
