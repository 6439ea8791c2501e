"""The inference table: every request and response, appended asynchronously as Parquet.

Rows are put on a bounded queue by the request handlers (never blocking them; a full queue
drops rows and counts them) and written by one background task, every ``flush_seconds``, as a
Parquet file per endpoint and flush under ``<dir>/endpoint_name=<name>/``. Each file is written
under a temporary name and renamed, so readers never see half a file. Read it from DuckDB::

    SELECT * FROM read_parquet('<dir>/*/*.parquet', hive_partitioning = true)

Columns follow Databricks' inference (payload) tables, plus token counts:
``databricks_request_id, client_request_id, request_date, request_time, status_code,
execution_duration_ms, request, response, served_entity_id, requester, input_token_count,
output_token_count``, and ``cost`` at the endpoint's catalog ``price`` (NULL without one), and
``endpoint_name`` from the directory. An endpoint whose config has
``auto_capture_config: {"enabled": false}`` is not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ai_query.redaction import redact
from ai_query.serving.metrics import ServerMetrics

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        pa.field("databricks_request_id", pa.string(), nullable=False),
        pa.field("client_request_id", pa.string()),
        pa.field("request_date", pa.date32(), nullable=False),
        pa.field("request_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("status_code", pa.int32(), nullable=False),
        pa.field("execution_duration_ms", pa.int64(), nullable=False),
        pa.field("request", pa.string()),
        pa.field("response", pa.string()),
        pa.field("served_entity_id", pa.string()),
        pa.field("requester", pa.string()),
        pa.field("input_token_count", pa.int64()),
        pa.field("output_token_count", pa.int64()),
        pa.field("cost", pa.float64()),
        pa.field("reasoning_token_count", pa.int64()),
    ]
)


@dataclass(frozen=True, kw_only=True)
class InferenceRecord:
    """One row of the inference table."""

    endpoint_name: str
    """Endpoint the request named (the partition directory)."""
    databricks_request_id: str
    """Id the server gave the request (also sent back as ``x-request-id``)."""
    client_request_id: str | None
    """Id the client gave (body ``client_request_id`` or header ``x-client-request-id``)."""
    request_time: dt.datetime
    """When the request arrived (UTC)."""
    status_code: int
    """HTTP status of the answer."""
    execution_duration_ms: int
    """Time to answer."""
    request: str
    """The request body (JSON)."""
    response: str
    """The response body (JSON; a stream's chunks assembled into one answer)."""
    served_entity_id: str | None
    """The served entity that answered."""
    requester: str
    """The authenticated principal."""
    input_token_count: int = 0
    """Prompt tokens."""
    output_token_count: int = 0
    """Generated tokens (a reasoning model's reasoning included)."""
    cost: float | None = None
    """What the tokens cost at the endpoint's ``price`` (None without a price)."""
    reasoning_token_count: int = 0
    """Of :attr:`output_token_count`, those a reasoning model spent reasoning (as its provider
    reports them; 0 otherwise)."""


class InferenceTable:
    """Queues records and writes them in the background."""

    def __init__(
        self,
        directory: Path,
        *,
        metrics: ServerMetrics | None = None,
        flush_seconds: float = 1.0,
        max_queue: int = 10_000,
    ) -> None:
        self.directory = directory
        self._metrics = metrics
        self._flush_seconds = flush_seconds
        self._queue: asyncio.Queue[InferenceRecord] | None = None
        self._max_queue = max_queue
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        """Records dropped because the queue was full."""

    async def start(self) -> None:
        """Start the writer task on the running loop."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._queue = asyncio.Queue(self._max_queue)
        self._task = asyncio.create_task(self._run(), name="inference-table-writer")

    @property
    def queue_depth(self) -> int:
        """Records waiting to be written."""
        return 0 if self._queue is None else self._queue.qsize()

    def append(self, record: InferenceRecord) -> None:
        """Queue ``record`` (from the server's loop); drops it when the queue is full."""
        if self._queue is None:
            return
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            if self._metrics is not None:
                self._metrics.table_dropped.inc()
        if self._metrics is not None:
            self._metrics.table_queue.set(self._queue.qsize())

    async def stop(self) -> None:
        """Write what is queued and stop the writer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self._flush()
            except Exception:
                log.exception("inference table: write failed")

    async def _flush(self) -> None:
        if self._queue is None or self._queue.empty():
            return
        records: list[InferenceRecord] = []
        while not self._queue.empty():
            records.append(self._queue.get_nowait())
        if self._metrics is not None:
            self._metrics.table_queue.set(0)
        await asyncio.to_thread(self._write, records)
        if self._metrics is not None:
            self._metrics.table_written.inc(len(records))

    def _write(self, records: list[InferenceRecord]) -> None:
        by_endpoint: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            row = asdict(record)
            for text in ("request", "response"):  # the table's side of ai_query.redaction
                if row[text] is not None:
                    row[text] = redact(row[text])
            name = row.pop("endpoint_name")
            row["request_date"] = record.request_time.date()
            by_endpoint[name].append(row)
        for name, rows in by_endpoint.items():
            folder = self.directory / f"endpoint_name={name}"
            folder.mkdir(parents=True, exist_ok=True)
            stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
            final = folder / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = folder / f".{final.name}.tmp"
            pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
            os.replace(tmp, final)
