"""Picklable engine specs, the per-process cache of engines built from them, and the one
factory of engines.

UDFs running in DuckDB threads or Spark Python workers receive an :class:`EngineSpec` and call
:func:`get_engine`, which builds the engine once per process and spec (the cache lives in this
importable module, not in a closure). :func:`in_process_engine` builds the engine a server hosts;
:func:`load_engine_factory` reads a user's own (``ai-query serve --engine-factory``).
"""

from __future__ import annotations

import ast
import importlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ai_query.catalog import Catalog
from ai_query.config import parse_engine_urls
from ai_query.engine.core.protocol import Engine
from ai_query.engine.kinds import EngineKind
from ai_query.errors import ConfigError

if TYPE_CHECKING:
    from ai_query.engine.backends.registry import BackendFactory

#: Builds the engine a server hosts from its catalog (see :func:`load_engine_factory`).
EngineFactory = Callable[[Catalog], Engine]


@dataclass(frozen=True, kw_only=True)
class EngineSpec:
    """How to reach an engine, in a form that pickles and hashes."""

    kind: EngineKind = EngineKind.VLLM
    """What answers: vLLM, the deterministic backend, or the engine servers at :attr:`urls`
    (:attr:`EngineKind.FLIGHT`)."""
    private_server: bool = True
    """For vLLM and the deterministic backend: run them in a private engine server started for
    this process (:class:`~ai_query.engine.process.embedded.EmbeddedEngine`), or in this process
    (False)."""
    catalog_json: str | None = None
    """The catalog as JSON (``Catalog.to_data``); None for the default catalog."""
    urls: tuple[str, ...] = ()
    """Engine server addresses, for :attr:`EngineKind.FLIGHT` (empty: ``AI_QUERY_ENGINE_URL``)."""
    token: str | None = None
    """Bearer token for the servers."""
    budget_tag: str | None = None
    """For :attr:`EngineKind.FLIGHT`: a query's budget, sent with every batch for the servers
    to hold it to (:func:`ai_query.engine.core.budget.tag_budget`)."""

    @classmethod
    def for_catalog(cls, catalog: Catalog | None, **kwargs: Any) -> EngineSpec:
        """A spec carrying ``catalog`` (None: the default catalog)."""
        data = None if catalog is None else json.dumps(catalog.to_data(), sort_keys=True)
        return cls(catalog_json=data, **kwargs)

    @classmethod
    def for_urls(cls, catalog: Catalog | None, engine_url: str | None) -> EngineSpec:
        """The engine servers at ``engine_url`` (``--engine-url``: a comma list), or without
        one vLLM in a private engine server; ``catalog`` as in :meth:`for_catalog`.

        Raises:
            ConfigError: for an address that is not ``grpc://host:port``.
        """
        urls = parse_engine_urls(engine_url)
        if urls:
            return cls.for_catalog(catalog, kind=EngineKind.FLIGHT, urls=urls)
        return cls.for_catalog(catalog)

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
    kind = EngineKind.parse(spec.kind)
    if kind is EngineKind.FLIGHT:
        from ai_query.engine.flight.client import FlightEngineClient

        # No catalog in the spec: the client asks the servers for theirs when it needs one.
        catalog = spec.catalog() if spec.catalog_json is not None else None
        client = FlightEngineClient(spec.urls, catalog=catalog, token=spec.token)
        if spec.budget_tag is None:
            return client
        from ai_query.engine.core.budget import BudgetTagging

        return BudgetTagging(client, spec.budget_tag)
    if kind is EngineKind.RECORDING:
        from ai_query.engine.recording import RecordingEngine

        return RecordingEngine(spec.catalog(), sink=Path(spec.urls[0]))
    if spec.private_server:
        from ai_query.engine.process.embedded import EmbeddedEngine

        return EmbeddedEngine(spec.catalog(), engine_kind=kind)
    return in_process_engine(spec.catalog(), kind)


def in_process_engine(catalog: Catalog, kind: EngineKind | str = EngineKind.VLLM) -> Engine:
    """An engine that runs ``catalog``'s models in this process (what a server hosts).

    Raises:
        ConfigError: for a kind that is not vLLM or the deterministic backend.
    """
    from ai_query.engine.local import LocalEngine

    kind = EngineKind.parse(kind, allowed=(EngineKind.VLLM, EngineKind.DETERMINISTIC))
    return LocalEngine(catalog, backend_factory=backend_factory_for(kind))


def backend_factory_for(kind: EngineKind) -> BackendFactory | None:
    """The model backends of an engine of ``kind`` (None: the default, vLLM)."""
    if kind == EngineKind.DETERMINISTIC:
        from ai_query.engine.backends.deterministic import deterministic_backend_factory

        return deterministic_backend_factory
    return None


def load_engine_factory(target: str) -> EngineFactory:
    """The factory named by ``target``: ``package.module:callable``, optionally with literal
    keyword arguments, ``package.module:callable(delay=0.5)`` (as gunicorn names an app).

    The server calls it with its :class:`~ai_query.catalog.Catalog` (and those keyword
    arguments); it returns the :class:`~ai_query.engine.core.protocol.Engine` to serve.

    Raises:
        ConfigError: when ``target`` is malformed, its module or attribute does not exist, or
            an argument is not a literal.
    """
    module_name, sep, expression = target.partition(":")
    if not sep or not module_name or not expression:
        raise ConfigError(f"engine factory {target!r} is not module:callable")
    try:
        call = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ConfigError(f"engine factory {target!r} is not module:callable") from exc
    kwargs: dict[str, Any] = {}
    if isinstance(call, ast.Call):
        if call.args or any(k.arg is None for k in call.keywords):
            raise ConfigError(f"engine factory {target!r}: give arguments as name=value")
        try:
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
        except ValueError as exc:
            raise ConfigError(f"engine factory {target!r}: arguments must be literals") from exc
        call = call.func
    name = ast.unparse(call)
    if not all(part.isidentifier() for part in name.split(".")):
        raise ConfigError(f"engine factory {target!r} is not module:callable")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"engine factory {target!r}: cannot import {module_name}: {exc}") from exc
    for part in name.split("."):
        if not hasattr(found, part):
            raise ConfigError(f"engine factory {target!r}: {module_name} has no {name}")
        found = getattr(found, part)
    if not callable(found):
        raise ConfigError(f"engine factory {target!r}: {name} is not callable")
    factory = found

    def build(catalog: Catalog) -> Engine:
        return factory(catalog, **kwargs)  # type: ignore[no-any-return]

    return build
