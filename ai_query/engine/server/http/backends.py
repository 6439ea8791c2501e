"""Backend factories the server can run with (``HTTPOptions.engine``)."""

from __future__ import annotations

import asyncio

from ai_query.catalog import ServedEntity
from ai_query.engine.backend import Backend
from ai_query.engine.deterministic import DeterministicBackend
from ai_query.engine.registry import BackendFactory, default_backend_factory


class _StartingDeterministic(DeterministicBackend):
    """The deterministic backend with a start-up time, so deployments can be watched."""

    def __init__(self, entity: ServedEntity) -> None:
        super().__init__(entity)
        self._startup = float(entity.engine_args.get("startup_seconds", 0) or 0)

    async def start(self) -> None:
        """Take ``engine_args.startup_seconds`` to start, like a model loading."""
        if self._startup > 0:
            await asyncio.sleep(self._startup)


def deterministic_backend_factory(entity: ServedEntity) -> Backend:
    """Local entities on the deterministic backend; external models forwarded for real."""
    if entity.external_model is not None:
        return default_backend_factory(entity)
    return _StartingDeterministic(entity)


def backend_factory_for(engine: str) -> BackendFactory | None:
    """The factory for an ``HTTPOptions.engine`` value (None: the default, vLLM)."""
    return deterministic_backend_factory if engine == "deterministic" else None
