"""Deploying served entities: their backends, their engines' health, and config rollouts.

:class:`Deployments` starts the models of a new config in the background while the old config
keeps serving, and swaps the record to the new config when every served entity is ready (or
marks the update failed). It reads and writes records through the
:class:`~ai_query.serving.registry.EndpointRegistry`; it owns no record itself. Everything
here runs on the HTTP server's event loop; backends run on the engine loop (:meth:`run`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from ai_query.catalog import Endpoint, ServedEntity
from ai_query.engine.backends.backend import Backend
from ai_query.engine.backends.registry import BackendFactory, existing_backend, shared_backend
from ai_query.engine.core.loop import shared_loop
from ai_query.engine.process.supervision import EngineHealth, EngineState, worst_health
from ai_query.errors import AIQueryError, ConfigError
from ai_query.redaction import REDACTOR
from ai_query.secrets import resolve_secret
from ai_query.serving.registry import EndpointRegistry, now_ms
from ai_query.serving.store import EndpointRecord

log = logging.getLogger("ai_query.serving.state")  # the name operators' log filters know
T = TypeVar("T")


class Deployments:
    """The backends of served entities, their health, and background config deployments."""

    def __init__(
        self,
        registry: EndpointRegistry,
        *,
        backend_factory: BackendFactory | None = None,
        check_models: bool = True,
    ) -> None:
        """Deploy the configs of ``registry``'s records.

        Args:
            registry: the records to deploy and to update when a deployment ends.
            backend_factory: builds backends (None: vLLM for local models, OpenAI client for
                external ones).
            check_models: check at create/update time that local models exist.
        """
        self.registry = registry
        self.factory = backend_factory
        """What builds backends (None: the default factory)."""
        self.redactor = REDACTOR
        """The process's redactor (:mod:`ai_query.redaction`); it learns each key in use."""
        self._check_models = check_models
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- backends and health -------------------------------------------------------------

    def backend(self, entity: ServedEntity) -> Backend:
        """The process's shared backend for ``entity``."""
        return shared_backend(entity, self.factory)

    def entity_health(self, entity: ServedEntity) -> EngineHealth:
        """The health of ``entity``'s engine (``NOT_STARTED`` until a request needs it)."""
        backend = existing_backend(entity, self.factory)
        return backend.health() if backend is not None else EngineHealth(EngineState.NOT_STARTED)

    def endpoint_health(self, record: EndpointRecord) -> EngineHealth | None:
        """The least ready engine of the endpoint's served config (None: no config served)."""
        if record.served is None:
            return None
        return worst_health([self.entity_health(e) for e in record.served.config.served_entities])

    def readiness(self, record: EndpointRecord) -> str:
        """Databricks' ``state.ready``: ``READY`` only while the config is served and every
        engine of it answers (a dead or restarting engine makes it ``NOT_READY``)."""
        health = self.endpoint_health(record)
        if record.ready != "READY" or health is None or not health.state.ready:
            return "NOT_READY"
        return "READY"

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the engine loop (where backends live) and await it from here."""
        return await asyncio.wrap_future(shared_loop().submit(coro))

    # ---- checks before a deployment ------------------------------------------------------

    def check_entities(self, endpoint: Endpoint) -> None:
        """Fail now, not in the background, on a missing secret or model.

        Raises:
            ConfigError: naming the served entity and what it lacks.
        """
        for entity in endpoint.config.served_entities:
            try:
                if entity.external_model is not None:
                    self.learn_secrets(endpoint, strict=True)
                elif self._check_models:
                    from ai_query.catalog import BUILT_MODELS, BUNDLED_MODELS
                    from ai_query.engine.backends.bundled import resolve_model_dir

                    if str(entity.entity_name) not in {*BUNDLED_MODELS, *BUILT_MODELS}:
                        resolve_model_dir(str(entity.entity_name))
            except AIQueryError as exc:
                raise ConfigError(f"served entity {entity.served_name!r}: {exc}") from exc

    def learn_secrets(self, endpoint: Endpoint, *, strict: bool = False) -> None:
        """Resolve the API keys of ``endpoint``'s external models, so the redactor masks them
        (``strict``: a missing secret raises :class:`ConfigError`)."""
        for entity in endpoint.config.served_entities:
            if entity.external_model is None:
                continue
            cfg = entity.external_model.openai_config  # a plaintext key is known when parsed
            if cfg.openai_api_key is None:
                continue
            try:
                resolve_secret(cfg.openai_api_key)  # remembers the value for redaction
            except ConfigError:
                if strict:
                    raise

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self, *, warmup: bool = False) -> None:
        """Resume deployments cut short by a restart; with ``warmup`` start every model now."""
        for record in self.registry.stored_records():
            if record.pending is not None and record.config_update == "IN_PROGRESS":
                self.deploy_later(record.name)
        for record in self.registry.records():
            if record.served is not None:
                self.learn_secrets(record.served)
        if warmup:
            for record in self.registry.records():
                if record.served is not None:
                    self._spawn(self._warm(record.served), f"warmup:{record.name}")

    async def stop(self) -> None:
        """Cancel deployments in progress (they resume at the next start)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_deployed(self) -> None:
        """Wait until every deployment in progress has finished (for tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def deploy_later(self, name: str) -> None:
        """Deploy the pending config of ``name`` in the background."""
        self._spawn(self._deploy(name), f"deploy:{name}")

    # ---- internals -----------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _warm(self, endpoint: Endpoint) -> None:
        for entity in endpoint.config.served_entities:
            start = getattr(self.backend(entity), "start", None)
            if start is not None:
                await self.run(start())

    async def _deploy(self, name: str) -> None:
        record = self.registry.stored(name)
        if record is None or record.pending is None:
            return
        target = record.pending
        message = None
        try:
            await self._warm(target)
        except Exception as exc:  # noqa: BLE001 - any start failure fails this deployment
            message = self.redactor(f"{type(exc).__name__}: {exc}")
            log.warning("endpoint %s: deployment failed: %s", name, message)
        current = self.registry.stored(name)
        if current is None or current.pending is not target:
            return  # deleted or superseded meanwhile
        if message is not None:
            self.registry.save(
                current.evolve(pending=None, config_update="UPDATE_FAILED", message=message)
            )
            return
        self.registry.save(
            current.evolve(
                served=target,
                pending=None,
                ready="READY",
                config_update="NOT_UPDATING",
                config_version=current.config_version + 1,
                last_updated_timestamp=now_ms(),
            )
        )
        log.info("endpoint %s: config version %d is ready", name, current.config_version + 1)
