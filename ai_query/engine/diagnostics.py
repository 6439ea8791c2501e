"""Engines for measuring and testing the transport, not models.

:class:`EchoEngine` answers each request with its own text (no per-row Python), so a
benchmark through it measures Flight and Arrow alone. :class:`DelayedEngine` wraps an engine and
holds every batch for a while, so a test can kill a server while batches are in flight.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from ai_query.catalog import Catalog
from ai_query.engine.core.batch import REQUEST_COLUMN, read_request_batch, result_schema
from ai_query.engine.core.protocol import Engine, engine_health
from ai_query.engine.process.supervision import EngineHealth


class EchoEngine:
    """Returns every request as its result (string), with no error and no tokens."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or Catalog.default()

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Echo the ``request`` column back as ``result``."""
        _, options = read_request_batch(batch.slice(0, 0))  # checks the call options only
        self.catalog.get(options.endpoint)
        requests = batch.column(REQUEST_COLUMN)
        n = batch.num_rows
        return pa.RecordBatch.from_arrays(
            [
                pa.array(np.arange(n, dtype=np.int64)),
                requests.cast(pa.string()),
                pa.nulls(n, pa.string()),
                pa.array(np.zeros(n, dtype=np.int32)),
                pa.array(np.zeros(n, dtype=np.int32)),
            ],
            schema=result_schema(pa.string()),
        )

    def close(self) -> None:
        """Nothing to release."""


class DelayedEngine:
    """Runs ``engine`` after holding each batch for ``delay`` seconds."""

    def __init__(self, engine: Engine, delay: float) -> None:
        self.engine = engine
        self.delay = delay
        self.catalog = engine.catalog

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Wait, then answer."""
        time.sleep(self.delay)
        return self.engine.run(batch)

    def endpoint_health(self) -> dict[str, EngineHealth]:
        """The wrapped engine's health."""
        return engine_health(self.engine)

    def close(self) -> None:
        """Close the wrapped engine."""
        self.engine.close()
