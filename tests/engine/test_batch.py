from __future__ import annotations

import pyarrow as pa
import pytest

from ai_query.engine.core.batch import (
    RowOutcome,
    align_results,
    raise_first_error,
    read_request_batch,
    request_batch,
    result_batch,
)
from ai_query.errors import RowAlignmentError, RowError
from ai_query.options import CallOptions, ModelParameters


def _result(rows: list[int]) -> pa.RecordBatch:
    base = result_batch([RowOutcome(f"r{i}") for i in range(len(rows))], pa.string())
    return base.set_column(0, "row", pa.array(rows, pa.int64()))


def test_request_batch_round_trip() -> None:
    opts = CallOptions(endpoint="e", model_parameters=ModelParameters(max_tokens=4))
    requests, back = read_request_batch(request_batch(["a", None, ""], opts))
    assert requests == ["a", None, ""]
    assert back == opts


def test_aligned_batch_passes_unchanged() -> None:
    batch = _result([0, 1, 2])
    assert align_results(batch, 3) is batch


def test_out_of_order_answers_are_put_back_in_request_order() -> None:
    batch = _result([2, 0, 1])  # results r0, r1, r2 belong to rows 2, 0, 1
    fixed = align_results(batch, 3)
    assert fixed.column("row").to_pylist() == [0, 1, 2]
    assert fixed.column("result").to_pylist() == ["r1", "r2", "r0"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        pytest.param([0, 1], r"missing \[2\]", id="missing"),
        pytest.param([0, 1, 1], r"repeated \[1\]", id="duplicated"),
        pytest.param([0, 1, 5], r"out of range \[5\]", id="stray"),
    ],
)
def test_missing_or_duplicated_rows_raise(rows: list[int], message: str) -> None:
    with pytest.raises(RowAlignmentError, match=message):
        align_results(_result(rows), 3)


def test_float_lists_with_nulls() -> None:
    batch = result_batch(
        [RowOutcome([1.0, 2.0]), None, RowOutcome(error="x")], pa.list_(pa.float32())
    )
    assert batch.column("result").to_pylist() == [[1.0, 2.0], None, None]
    assert batch.column("error").to_pylist() == [None, None, "x"]


def test_raise_first_error_names_row_and_endpoint() -> None:
    batch = result_batch(
        [RowOutcome("a"), RowOutcome(error="boom"), RowOutcome(error="b2")], pa.string()
    )
    with pytest.raises(RowError, match="endpoint 'ep' failed on row 11: boom"):
        raise_first_error(batch, "ep", row_offset=10)
