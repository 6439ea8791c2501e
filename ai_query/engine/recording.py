"""EXPLAIN's recording engine: it records every request batch the AI functions send and answers
with stand-ins of the right type (empty text for plain text results; the deterministic
backend's answers for typed, choice and vector results), never a model.

In the process that explains (DuckDB), the records stay in memory. Where the functions run in
other processes (Spark's Python workers), each worker's recorder also writes its batches as Arrow
files into a directory (:attr:`EngineKind.RECORDING`, the directory in the spec's ``urls``), and
the driver reads them back with :func:`load_calls`.
"""

from __future__ import annotations

import itertools
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ai_query.catalog import Catalog
from ai_query.engine.backends.deterministic import DeterministicBackend
from ai_query.engine.core.batch import (
    REQUEST_COLUMN,
    read_request_batch,
    read_request_files,
    text_results,
)
from ai_query.engine.core.files import file_digest
from ai_query.engine.local import LocalEngine
from ai_query.options import CallOptions
from ai_query.sql.response_format import resolve_output
from ai_query.tasks import Task

_files = itertools.count()


@dataclass
class CallRecord:
    """The requests one AI call (one set of call options) sent while a statement was explained."""

    options: CallOptions
    """The call's options."""
    chunks: list[pa.Array]
    """Every request row, in the batches sent."""
    file_chunks: list[pa.Array] = field(default_factory=list)
    """Each request row's file digest (NULL: no file), in the batches sent."""

    @property
    def requests(self) -> pa.Array:
        """Every request row (string, NULL allowed)."""
        return pa.concat_arrays(self.chunks) if self.chunks else pa.array([], pa.string())

    @property
    def file_digests(self) -> pa.Array:
        """Each request row's file digest (:func:`~ai_query.engine.core.files.file_digest`;
        NULL where the row has no file)."""
        if not self.file_chunks:
            return pa.array([], pa.string())
        return pa.concat_arrays(self.file_chunks)

    def add(self, batch: pa.RecordBatch) -> None:
        """Record the rows of a request batch of this call."""
        self.chunks.append(batch.column(REQUEST_COLUMN).cast(pa.string()))
        files = read_request_files(batch)
        digests = [None] * batch.num_rows if files is None else [
            None if f is None else file_digest(f) for f in files
        ]
        self.file_chunks.append(pa.array(digests, pa.string()))


class RecordingEngine:
    """Records request batches and answers them with stand-ins; calls no model (thread-safe).
    With a ``sink`` directory, each batch is also written there (see the module docstring)."""

    wants_slices = False
    """It answers at once: chunks need not be cut into concurrent slices."""

    def __init__(self, catalog: Catalog, sink: Path | None = None) -> None:
        self.catalog = catalog
        self.sink = sink
        self._lock = threading.Lock()
        self._calls: dict[str, CallRecord] = {}
        self._fixed: dict[str, str | None] = {}
        self._stand_in = LocalEngine(
            catalog, backend_factory=lambda e: DeterministicBackend(e, max_context=1 << 30),
            memo_entries=0,
        )

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Record ``batch``; answer with stand-ins of the call's result type."""
        _, options = read_request_batch(batch.slice(0, 0))
        key = options.to_json()
        requests = batch.column(REQUEST_COLUMN).cast(pa.string())
        with self._lock:
            self._calls.setdefault(key, CallRecord(options, [])).add(batch)
            known = key in self._fixed
            fixed = self._fixed.get(key)
        if self.sink is not None:
            name = f"{os.getpid()}-{next(_files):08d}-{uuid.uuid4().hex[:8]}.arrow"
            with pa.OSFile(str(self.sink / name), "wb") as f, pa.ipc.new_file(
                f, batch.schema
            ) as writer:
                writer.write_batch(batch)
        if not known:
            fixed = self._fixed_answer(options)
            with self._lock:
                self._fixed[key] = fixed
        if fixed is None:
            return self._stand_in.run(batch)
        return text_results(pc.if_else(pc.is_null(requests), pa.scalar(None, pa.string()), fixed))

    def _fixed_answer(self, options: CallOptions) -> str | None:
        """The one stand-in text of a call's rows: empty for plain text, the first choice of
        a guided choice (``ai_filter``'s "true": every row passes, so the counts behind it
        are upper bounds); None where the deterministic backend answers (typed, vectors,
        a choice answered with its scores)."""
        endpoint = self.catalog.get(options.endpoint)
        output = resolve_output(options.return_type, options.response_format, endpoint.task)
        if endpoint.task == Task.EMBEDDINGS or not output.sql_type.is_string:
            return None
        if output.choice:  # a choice with its scores answers JSON: the deterministic one's
            return None if output.scores else str(output.choice[0])
        return None if output.parse_json else ""

    def calls(self) -> list[CallRecord]:
        """The calls recorded, in the order first seen."""
        with self._lock:
            return list(self._calls.values())

    def close(self) -> None:
        """Nothing to release."""


def load_calls(directory: Path) -> list[CallRecord]:
    """The calls recorded into ``directory`` by recorders with that sink."""
    calls: dict[str, CallRecord] = {}
    for path in sorted(directory.glob("*.arrow")):
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        _, options = read_request_batch(pa.RecordBatch.from_pylist([], schema=table.schema))
        record = calls.setdefault(options.to_json(), CallRecord(options, []))
        for batch in table.to_batches():
            record.add(batch)
    return list(calls.values())
