"""Picklable engine specs, and the per-process cache of engines built from them.

UDFs running in DuckDB threads or Spark Python workers receive an :class:`EngineSpec` and call
:func:`get_engine`, which builds the engine once per process and spec (the cache lives in this
importable module, not in a closure).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Literal

from ai_query.catalog import Catalog
from ai_query.engine.core.protocol import Engine
from ai_query.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class EngineSpec:
    """How to reach an engine, in a form that pickles and hashes."""

    kind: Literal["local", "deterministic", "flight"] = "local"
    """``local``: vLLM in a private engine server started for this process
    (:class:`~ai_query.engine.process.embedded.EmbeddedEngine`); ``deterministic``: the test
    backend, in
    this process; ``flight``: engine servers at :attr:`urls`."""
    catalog_json: str | None = None
    """The catalog as JSON (``Catalog.to_data``); None for the default catalog."""
    urls: tuple[str, ...] = ()
    """Engine server addresses, for ``flight``."""
    token: str | None = None
    """Bearer token for the servers."""

    @classmethod
    def for_catalog(cls, catalog: Catalog | None, **kwargs: Any) -> EngineSpec:
        """A spec carrying ``catalog`` (None: the default catalog)."""
        data = None if catalog is None else json.dumps(catalog.to_data(), sort_keys=True)
        return cls(catalog_json=data, **kwargs)

    def catalog(self) -> Catalog:
        """The catalog this spec names."""
        if self.catalog_json is None:
            return Catalog.default()
        return Catalog.from_data(json.loads(self.catalog_json))


_engines: dict[EngineSpec, Engine] = {}
_lock = threading.Lock()


def get_engine(spec: EngineSpec) -> Engine:
    """The engine for ``spec`` in this process, built on first use."""
    with _lock:
        engine = _engines.get(spec)
        if engine is None:
            engine = build_engine(spec)
            _engines[spec] = engine
        return engine


def build_engine(spec: EngineSpec) -> Engine:
    """A new engine for ``spec`` (prefer :func:`get_engine`, which shares it)."""
    if spec.kind == "local":
        from ai_query.engine.process.embedded import EmbeddedEngine

        return EmbeddedEngine(spec.catalog())
    if spec.kind == "deterministic":
        from ai_query.engine.backends.deterministic import DeterministicBackend
        from ai_query.engine.local import LocalEngine

        return LocalEngine(spec.catalog(), backend_factory=DeterministicBackend)
    if spec.kind == "flight":
        from ai_query.engine.flight.client import FlightEngineClient

        # No catalog in the spec: the client asks the servers for theirs when it needs one.
        catalog = spec.catalog() if spec.catalog_json is not None else None
        return FlightEngineClient(spec.urls, catalog=catalog, token=spec.token)
    raise ConfigError(f"unknown engine kind {spec.kind!r}; expected local, deterministic or flight")
