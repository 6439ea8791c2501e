"""The Arrow wire format of the engine, and the row-alignment invariant.

A request batch has one column, ``request`` (string, NULL allowed), and the call's options
(:class:`ai_query.options.CallOptions`) as JSON in the schema metadata under
``ai_query.call``; a call with ``files`` adds the binary column ``files``, one file's bytes (or
NULL) per row (:mod:`ai_query.engine.core.files`). A result batch has one row per request
row, in the same order:

=================  ==========  =================================================
column             type        meaning
=================  ==========  =================================================
row                int64       index of the request row this result belongs to
result             T           the answer, typed (NULL for a NULL request or error)
error              string      why the row failed, else NULL
prompt_tokens      int32       tokens read
completion_tokens  int32       tokens generated
reasoning_tokens   int32       of those generated, the reasoning's (reasoning models)
cached             bool        answered without the model (a memo or result cache)
=================  ==========  =================================================

``cached`` lets a client count what a query spent from its answers alone, with no preview
round trip before the rows are sent (:func:`answered_cached`).

:func:`align_results` is the one place that checks "output i is input row i": a result batch
with a missing or repeated row raises :class:`ai_query.errors.RowAlignmentError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ai_query.engine.core.files import FILES_COLUMN
from ai_query.errors import RowAlignmentError, RowError
from ai_query.options import CallOptions
from ai_query.redaction import redact

REQUEST_COLUMN = "request"
CALL_METADATA_KEY = b"ai_query.call"


@dataclass
class RowOutcome:
    """The answer for one row: a value or an error, with token counts."""

    value: Any = None
    """Python value fitting the result type; None with ``error`` set on failure."""
    error: str | None = None
    """Why the row failed."""
    prompt_tokens: int = 0
    """Tokens read."""
    completion_tokens: int = 0
    """Tokens generated."""
    reasoning_tokens: int = 0
    """Of :attr:`completion_tokens`, those a reasoning model spent reasoning."""
    cached: bool = False
    """Answered without the model: from a memo of recent answers or a result cache (its
    token counts are those of the call that computed it)."""


def request_batch(
    requests: Sequence[str | None] | pa.Array,
    options: CallOptions,
    files: Sequence[bytes | None] | pa.Array | None = None,
) -> pa.RecordBatch:
    """A request batch for ``requests`` under one call's ``options``, with each row's file
    where ``files`` is given (no ``files`` column when it is None)."""
    array = requests if isinstance(requests, pa.Array) else pa.array(requests, pa.string())
    if not pa.types.is_string(array.type):
        array = array.cast(pa.string())
    fields = [pa.field(REQUEST_COLUMN, pa.string())]
    columns = [array]
    if files is not None:
        blobs = files if isinstance(files, pa.Array) else pa.array(files, pa.binary())
        if not pa.types.is_binary(blobs.type):
            blobs = blobs.cast(pa.binary())
        fields.append(pa.field(FILES_COLUMN, pa.binary()))
        columns.append(blobs)
    schema = pa.schema(fields, metadata={CALL_METADATA_KEY: options.to_json().encode()})
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def read_request_files(batch: pa.RecordBatch) -> list[bytes | None] | None:
    """Each row's file bytes (None for a row without one); None when the batch has no
    ``files`` column."""
    if FILES_COLUMN not in batch.schema.names:
        return None
    column = batch.column(FILES_COLUMN)
    if not pa.types.is_binary(column.type):
        column = column.cast(pa.binary())
    return column.to_pylist()


def read_request_batch(batch: pa.RecordBatch) -> tuple[list[str | None], CallOptions]:
    """The requests and call options of a request batch.

    Raises:
        ConfigError: when the batch lacks the ``request`` column or the options metadata.
    """
    from ai_query.errors import ConfigError

    metadata = batch.schema.metadata or {}
    if CALL_METADATA_KEY not in metadata:
        raise ConfigError("request batch has no ai_query.call options in its schema metadata")
    if REQUEST_COLUMN not in batch.schema.names:
        raise ConfigError(f"request batch has no {REQUEST_COLUMN!r} column")
    column = batch.column(REQUEST_COLUMN)
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    return column.to_pylist(), CallOptions.from_json(metadata[CALL_METADATA_KEY])


def result_schema(result_type: pa.DataType) -> pa.Schema:
    """The schema of a result batch whose results have ``result_type``."""
    return pa.schema(
        [
            pa.field("row", pa.int64(), nullable=False),
            pa.field("result", result_type),
            pa.field("error", pa.string()),
            pa.field("prompt_tokens", pa.int32()),
            pa.field("completion_tokens", pa.int32()),
            pa.field("reasoning_tokens", pa.int32()),
            pa.field("cached", pa.bool_()),
        ]
    )


def result_batch(outcomes: Sequence[RowOutcome | None], result_type: pa.DataType) -> pa.RecordBatch:
    """A result batch, row i from ``outcomes[i]`` (None: a NULL request, so a NULL result).

    Row errors are redacted here (:mod:`ai_query.redaction`), once, for every surface.
    """
    values = [o.value if o is not None else None for o in outcomes]
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.arange(len(outcomes), dtype=np.int64)),
            _result_array(values, result_type),
            pa.array([_error(o) for o in outcomes], pa.string()),
            pa.array([o.prompt_tokens if o is not None else 0 for o in outcomes], pa.int32()),
            pa.array([o.completion_tokens if o is not None else 0 for o in outcomes], pa.int32()),
            pa.array([o.reasoning_tokens if o is not None else 0 for o in outcomes], pa.int32()),
            pa.array([o is not None and o.cached for o in outcomes], pa.bool_()),
        ],
        schema=result_schema(result_type),
    )


def text_results(texts: pa.Array) -> pa.RecordBatch:
    """A result batch of ``texts`` (strings, NULL allowed), one per request row, with no error,
    no tokens and nothing cached: what an engine without a model answers."""
    n = len(texts)
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    return pa.RecordBatch.from_arrays(
        [pa.array(np.arange(n, dtype=np.int64)), texts.cast(pa.string()), pa.nulls(n, pa.string()),
         zeros, zeros, zeros, pa.array(np.zeros(n, dtype=bool))],
        schema=result_schema(pa.string()),
    )


def answered_cached(result: pa.RecordBatch) -> np.ndarray:
    """Which rows of a result batch were answered without the model (``cached``)."""
    cached = result.column("cached").fill_null(False)
    return np.asarray(cached.to_numpy(zero_copy_only=False), dtype=bool)


def _error(outcome: RowOutcome | None) -> str | None:
    """A row's error as it enters the batch: secrets masked (every SQL surface reads it)."""
    if outcome is None or outcome.error is None:
        return None
    return redact(outcome.error)


def _result_array(values: list[Any], result_type: pa.DataType) -> pa.Array:
    if pa.types.is_list(result_type) and pa.types.is_floating(result_type.value_type):
        return _float_lists(values, result_type)
    return pa.array(values, result_type)


def _float_lists(values: list[Any], result_type: pa.DataType) -> pa.Array:
    """Embedding vectors as one contiguous buffer (much faster than per-row conversion)."""
    lengths = np.fromiter((0 if v is None else len(v) for v in values), np.int32, len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = [np.asarray(v, dtype=np.float64) for v in values if v is not None]
    flat = np.concatenate(present) if present else np.zeros(0)
    mask = pa.array([v is None for v in values]) if any(v is None for v in values) else None
    child = pa.array(flat.astype(result_type.value_type.to_pandas_dtype()), result_type.value_type)
    return pa.ListArray.from_arrays(pa.array(offsets), child, type=result_type, mask=mask)


def align_results(result: pa.RecordBatch, num_rows: int) -> pa.RecordBatch:
    """Check that ``result`` holds each row 0..num_rows-1 exactly once; order it by row.

    Raises:
        RowAlignmentError: naming the missing or repeated rows.
    """
    rows = result.column("row").to_numpy(zero_copy_only=False)
    if len(rows) == num_rows and np.array_equal(rows, np.arange(num_rows)):
        return result
    counts = np.bincount(rows[(rows >= 0) & (rows < num_rows)], minlength=num_rows)
    missing = np.flatnonzero(counts == 0)[:10].tolist()
    repeated = np.flatnonzero(counts > 1)[:10].tolist()
    stray = rows[(rows < 0) | (rows >= num_rows)][:10].tolist()
    if missing or repeated or stray:
        raise RowAlignmentError(
            f"result batch does not match its {num_rows} request rows: "
            f"missing {missing}, repeated {repeated}, out of range {stray}"
        )
    return result.take(pc.sort_indices(result.column("row")))


def stitch_results(parts: Sequence[tuple[pa.RecordBatch, Sequence[int]]]) -> pa.RecordBatch:
    """One result batch from partial ones: part ``(batch, rows)`` answered request rows
    ``rows`` (its row i is request row ``rows[i]``); together they answer each row once."""
    total = sum(len(rows) for _, rows in parts)
    schema = result_schema(parts[-1][0].schema.field("result").type)
    table = pa.Table.from_batches([batch.cast(schema) for batch, _ in parts], schema)
    source_of = np.empty(total, dtype=np.int64)
    start = 0
    for _, rows in parts:
        source_of[np.asarray(rows, dtype=np.int64)] = start + np.arange(len(rows))
        start += len(rows)
    ordered = table.take(pa.array(source_of)).combine_chunks()
    columns = [pa.array(np.arange(total, dtype=np.int64))]
    columns += [ordered.column(i).chunk(0) for i in range(1, ordered.num_columns)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def raise_first_error(result: pa.RecordBatch, endpoint: str, row_offset: int = 0) -> None:
    """Raise :class:`RowError` for the first failed row of an aligned result batch, if any."""
    errors = result.column("error")
    if errors.null_count == len(errors):
        return
    index = int(pc.index(pc.is_valid(errors), True).as_py())
    raise RowError(errors[index].as_py(), row_offset + index, endpoint)
