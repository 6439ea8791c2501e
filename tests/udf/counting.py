"""An engine wrapper that counts what crosses the engine boundary (tests of the UDFs)."""

from __future__ import annotations

from typing import Any


class CountingEngine:
    """Wraps an engine and counts the rows it is asked to answer (the process boundary)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.catalog = engine.catalog
        self.rows = 0
        self.endpoints: list[str] = []

    def run(self, batch: Any) -> Any:
        from ai_query.engine.core.batch import read_request_batch

        requests, options = read_request_batch(batch)
        self.rows += sum(r is not None for r in requests)
        self.endpoints.append(options.endpoint)
        return self.engine.run(batch)
