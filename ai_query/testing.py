"""Engines for testing and measuring the transport, not models; never part of the product.

:class:`EchoEngine` answers each request with its own text (no per-row Python), so a
benchmark through it measures Flight and Arrow alone. :class:`DelayedEngine` wraps an engine and
holds every batch for a while, so a test can kill a server while batches are in flight.

A server hosts them as any engine of one's own, through ``ai-query serve --engine-factory``
(tests still start servers the way users do)::

    ai-query serve --engine-factory ai_query.testing:echo_engine
    ai-query serve --engine-factory 'ai_query.testing:delayed_engine(delay=0.4)'
"""

from __future__ import annotations

import time

import pyarrow as pa

from ai_query.catalog import Catalog
from ai_query.engine.core.batch import REQUEST_COLUMN, read_request_batch, text_results
from ai_query.engine.core.forwarding import ForwardingEngine
from ai_query.engine.core.protocol import Engine
from ai_query.engine.kinds import EngineKind
from ai_query.engine.spec import in_process_engine


class EchoEngine:
    """Returns every request as its result (string), with no error and no tokens."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or Catalog.default()

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Echo the ``request`` column back as ``result``."""
        _, options = read_request_batch(batch.slice(0, 0))  # checks the call options only
        self.catalog.get(options.endpoint)
        return text_results(batch.column(REQUEST_COLUMN))

    def close(self) -> None:
        """Nothing to release."""


class DelayedEngine(ForwardingEngine):
    """Runs ``engine`` after holding each batch for ``delay`` seconds."""

    def __init__(self, engine: Engine, delay: float) -> None:
        super().__init__(engine)
        self.delay = delay

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Wait, then answer."""
        time.sleep(self.delay)
        return self.inner.run(batch)


def echo_engine(catalog: Catalog) -> EchoEngine:
    """Engine factory (``--engine-factory ai_query.testing:echo_engine``): an
    :class:`EchoEngine` over ``catalog``."""
    return EchoEngine(catalog)


def delayed_engine(
    catalog: Catalog, *, delay: float, kind: str = EngineKind.DETERMINISTIC
) -> DelayedEngine:
    """Engine factory (``--engine-factory 'ai_query.testing:delayed_engine(delay=1.0)'``): the
    in-process engine of ``kind`` (default: the deterministic backend) holding each batch for
    ``delay`` seconds."""
    return DelayedEngine(in_process_engine(catalog, kind), delay)
