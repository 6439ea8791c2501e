"""An engine that wraps another: the one place that forwards ``run``, ``preview``, health and
``close``, so a wrapper (a meter, a budget, a cache, a switch) overrides only what it changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ai_query.engine.core.preview import preview
from ai_query.engine.core.protocol import Engine, engine_health

if TYPE_CHECKING:
    import pyarrow as pa

    from ai_query.catalog import Catalog
    from ai_query.engine.process.supervision import EngineHealth


class ForwardingEngine:
    """Forwards every :class:`~ai_query.engine.core.protocol.Engine` call to ``inner``."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.catalog: Catalog = inner.catalog

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The inner engine's answer."""
        return self.inner.run(batch)

    def preview(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The inner engine's preview (:mod:`ai_query.engine.core.preview`)."""
        return preview(self.inner, batch)

    def endpoint_health(self) -> dict[str, EngineHealth]:
        """The inner engine's health."""
        return engine_health(self.inner)

    def close(self) -> None:
        """Close the inner engine."""
        self.inner.close()
