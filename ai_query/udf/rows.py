"""What a SQL UDF does with a chunk of rows, shared by DuckDB and Spark.

Rows arrive as columns of the ``ai_query`` arguments (``files``, each row's file bytes, where
the call gives it). Rows are grouped by their constant
arguments (one group per distinct call), each group goes to the engine as one request batch,
and the answers come back as text in the original row order: the answer itself for string
results, JSON for typed results (``{"result": ..., "errorMessage": ...}`` under
``failOnError => false``). With ``failOnError => true`` the first failed row raises
:class:`ai_query.errors.RowError` naming the endpoint and the cause.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ai_query.engine.core.arrow_types import json_default
from ai_query.engine.core.batch import align_results, raise_first_error, request_batch
from ai_query.engine.core.preview import preview
from ai_query.engine.core.protocol import Engine, wants_slices
from ai_query.errors import UnsupportedCallError
from ai_query.options import CallOptions, ModelParameters

#: Called after each answered group of rows with (rows, prompt_tokens, completion_tokens,
#: reasoning_tokens); reasoning_tokens are those of the completion tokens a reasoning model
#: spent reasoning.
ProgressCallback = Callable[[int, int, int, int], None]


def answer_rows(
    engine: Engine,
    endpoints: Sequence[str | None],
    requests: Sequence[str | None],
    return_types: Sequence[str | None],
    fail_on_errors: Sequence[bool | None],
    model_parameters: Sequence[str | None],
    response_formats: Sequence[str | None],
    *,
    files: Sequence[bytes | None] | None = None,
    progress: ProgressCallback | None = None,
) -> list[str | None]:
    """Answer a chunk of rows; returns one text (or None) per row, in order. ``files``: each
    row's file (None where it has none; the argument None or all None: a text call)."""
    if files is not None and all(f is None for f in files):
        files = None
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(
        zip(
            endpoints, return_types, fail_on_errors, model_parameters, response_formats, strict=True
        )
    ):
        groups.setdefault(key, []).append(i)
    out: list[str | None] = [None] * len(requests)
    for (endpoint, return_type, fail, params, fmt), rows in groups.items():
        if endpoint is None:
            raise UnsupportedCallError("ai_query endpoint must not be NULL")
        options = CallOptions(
            endpoint=endpoint,
            model_parameters=ModelParameters.from_value(_params_value(params)),
            return_type=return_type,
            response_format=fmt,
            fail_on_error=True if fail is None else bool(fail),
        )
        group = [requests[i] for i in rows]
        group_files = None if files is None else [files[i] for i in rows]
        texts = _answer_in_slices(engine, group, options, rows, progress, group_files)
        for i, text in zip(rows, texts, strict=True):
            out[i] = text
    return out


def answer_vectors(
    engine: Engine,
    endpoints: Sequence[str | None],
    requests: Sequence[str | None],
    *,
    progress: ProgressCallback | None = None,
) -> pa.Array:
    """Embed a chunk of rows (``__ai_query_vector``): a list of float32 per row, NULL for a NULL
    request, as Arrow from the engine to the SQL engine (no JSON). Each endpoint's rows go to
    the engine as one request batch; the first failed row raises :class:`RowError`."""
    groups: dict[str | None, list[int]] = {}
    for i, endpoint in enumerate(endpoints):
        groups.setdefault(endpoint, []).append(i)
    parts: list[pa.Array] = []
    order: list[int] = []
    for endpoint, rows in groups.items():
        if endpoint is None:
            raise UnsupportedCallError("ai_query endpoint must not be NULL")
        options = CallOptions(endpoint=endpoint)
        batch = request_batch([requests[i] for i in rows], options)
        result = align_results(engine.run(batch), len(rows))
        raise_first_error(result, endpoint, rows[0])
        parts.append(result.column("result"))
        order.extend(rows)
        if progress is not None:
            progress(len(rows), int(pc.sum(result.column("prompt_tokens")).as_py() or 0), 0, 0)
    vectors = pa.concat_arrays(parts).cast(VECTOR_TYPE)
    if len(parts) == 1:
        return vectors
    return vectors.take(pa.array(np.argsort(np.asarray(order))))


def count_tokens(
    engine: Engine, endpoints: Sequence[str | None], texts: Sequence[str | None]
) -> list[int | None]:
    """``ai_count_tokens`` over a chunk: each text's prompt tokens as ``ai_query(endpoint,
    text)`` would read them (the endpoint's tokenizer and chat template; estimated for a
    provider without a tokenizer here), from the engine's preview: no model call. NULL text:
    NULL."""
    groups: dict[str | None, list[int]] = {}
    for i, endpoint in enumerate(endpoints):
        groups.setdefault(endpoint, []).append(i)
    out: list[int | None] = [None] * len(texts)
    for endpoint, rows in groups.items():
        if endpoint is None:
            raise UnsupportedCallError("ai_count_tokens endpoint must not be NULL")
        batch = request_batch([texts[i] for i in rows], CallOptions(endpoint=endpoint))
        counted = align_results(preview(engine, batch), len(rows)).column("prompt_tokens")
        for i, n in zip(rows, counted.to_pylist(), strict=True):
            out[i] = n
    return out


#: What ``__ai_query_vector`` returns: DuckDB's FLOAT[], Spark's ARRAY<FLOAT>.
VECTOR_TYPE = pa.list_(pa.float32())


def _answer_in_slices(
    engine: Engine,
    requests: list[str | None],
    options: CallOptions,
    rows: list[int],
    progress: ProgressCallback | None,
    files: list[bytes | None] | None = None,
) -> list[str | None]:
    """Answer a group as concurrent slices: all rows are in flight together (the engine batches
    across calls), and progress moves as slices finish rather than once per chunk."""
    slices = SLICES_PER_CHUNK if wants_slices(engine) else 1
    size = max(MIN_SLICE_ROWS, -(-len(requests) // slices))
    starts = list(range(0, len(requests), size))

    def one(start: int) -> CallAnswer:
        answer = answer_call(
            engine,
            requests[start : start + size],
            options,
            row_offset=rows[start],
            files=None if files is None else files[start : start + size],
        )
        if progress is not None:
            progress(
                len(answer.texts), answer.prompt_tokens, answer.completion_tokens,
                answer.reasoning_tokens,
            )
        return answer

    if len(starts) == 1:
        return one(0).texts
    answers = list(_slice_pool().map(one, starts))
    return [text for answer in answers for text in answer.texts]


#: A chunk is cut into at most this many concurrent slices of at least MIN_SLICE_ROWS rows.
SLICES_PER_CHUNK = 16
MIN_SLICE_ROWS = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _slice_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="ai-query-slice")
        return _pool


@dataclass(frozen=True)
class CallAnswer:
    """The text per row of one call, and the tokens it took."""

    texts: list[str | None]
    """One text per request row (None for NULL)."""
    prompt_tokens: int
    """Tokens read, over all rows."""
    completion_tokens: int
    """Tokens generated, over all rows."""
    reasoning_tokens: int = 0
    """Of :attr:`completion_tokens`, those a reasoning model spent reasoning."""


def answer_call(
    engine: Engine,
    requests: Sequence[str | None],
    options: CallOptions,
    *,
    row_offset: int = 0,
    files: Sequence[bytes | None] | None = None,
) -> CallAnswer:
    """Answer the rows of one call (with each row's file, where ``files`` is given); text per
    row (see the module docstring)."""
    batch = request_batch(list(requests), options, None if files is None else list(files))
    result = align_results(engine.run(batch), len(requests))
    if options.fail_on_error:
        raise_first_error(result, options.endpoint, row_offset)
    column = result.column("result")
    as_text = pa.types.is_string(column.type)
    values = column.to_pylist() if as_text else _json_values(column)
    if not options.fail_on_error:
        errors = result.column("error").to_pylist()
        values = [
            None if req is None else _error_struct_json(value, err, as_text)
            for req, value, err in zip(requests, values, errors, strict=True)
        ]
    return CallAnswer(
        values,
        int(pc.sum(result.column("prompt_tokens")).as_py() or 0),
        int(pc.sum(result.column("completion_tokens")).as_py() or 0),
        int(pc.sum(result.column("reasoning_tokens")).as_py() or 0),
    )


def _params_value(params: str | None) -> Any:
    """modelParameters arrive as JSON text; a JSON *string* holding JSON is unwrapped."""
    if params is None:
        return None
    value = json.loads(params) if params.strip() else None
    if isinstance(value, str):
        value = json.loads(value)
    return value


def _json_values(column: pa.Array) -> list[str | None]:
    if pa.types.is_list(column.type) and pa.types.is_floating(column.type.value_type):
        return _float_lists_json(column)
    values = column.to_pylist()
    if _has_map(column.type):
        # Arrow gives a MAP as (key, value) pairs; SQL engines read a MAP from a JSON object.
        values = [_objects(v, column.type) for v in values]
    return [
        None if v is None else json.dumps(v, default=json_default, ensure_ascii=False)
        for v in values
    ]


def _has_map(typ: pa.DataType) -> bool:
    if pa.types.is_map(typ):
        return True
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _has_map(typ.value_type)
    if pa.types.is_struct(typ):
        return any(_has_map(typ.field(i).type) for i in range(typ.num_fields))
    return False


def _objects(value: Any, typ: pa.DataType) -> Any:
    """``value`` with every MAP (a list of pairs) turned into a dict, following ``typ``."""
    if value is None:
        return None
    if pa.types.is_map(typ):
        return {str(k): _objects(v, typ.item_type) for k, v in value}
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return [_objects(v, typ.value_type) for v in value]
    if pa.types.is_struct(typ):
        return {
            typ.field(i).name: _objects(value.get(typ.field(i).name), typ.field(i).type)
            for i in range(typ.num_fields)
        }
    return value


def _float_lists_json(column: pa.Array) -> list[str | None]:
    """Embeddings as JSON arrays, formatted in bulk (they are the bulk of the bytes)."""
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    offsets = column.offsets.to_numpy()
    # float32 has ~9 significant digits; '%.9g' keeps every bit and stays short.
    formatted = np.char.mod("%.9g", flat) if flat.size else np.array([], dtype=str)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    out: list[str | None] = []
    for i in range(len(column)):
        if not valid[i]:
            out.append(None)
        else:
            out.append("[" + ",".join(formatted[offsets[i] : offsets[i + 1]]) + "]")
    return out


def _error_struct_json(value: str | None, error: str | None, value_is_text: bool) -> str:
    if value is None:
        result: Any = None
    elif value_is_text:
        result = value
    else:
        return '{"result":' + value + ',"errorMessage":' + json.dumps(error) + "}"
    return json.dumps({"result": result, "errorMessage": error}, ensure_ascii=False)

