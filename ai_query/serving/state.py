"""The live set of serving endpoints, and the operations of the management API.

:class:`ServingState` is the one model of what the server serves, made of two parts with one
job each: the :class:`~ai_query.serving.registry.EndpointRegistry` (every endpoint's record,
the catalog served now, permission lookups) and the
:class:`~ai_query.serving.deployment.Deployments` (backends, engine health, configs deployed
in the background while the old one keeps serving). This module validates management requests
and hands them to the two; the routes talk to :class:`ServingState` alone.

Everything here runs on the HTTP server's event loop, except :meth:`ServingState.catalog`,
which any thread may call.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pydantic import ValidationError

from ai_query.catalog import (
    Catalog,
    Endpoint,
    EndpointConfig,
    RateLimit,
    ServedEntity,
    Tag,
    describe_validation_error,
)
from ai_query.engine.backends.backend import Backend
from ai_query.engine.backends.registry import BackendFactory
from ai_query.engine.process.supervision import EngineHealth
from ai_query.errors import ConfigError, ResourceConflictError
from ai_query.serving.deployment import Deployments
from ai_query.serving.permissions import (
    ACL,
    ExternalPolicy,
    Identity,
    PermissionLevel,
    creator_acl,
    require_create,
)
from ai_query.serving.registry import EndpointRegistry, now_ms
from ai_query.serving.store import EndpointRecord, EndpointStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class ServingState:
    """What the server serves, and the operations of the management API."""

    def __init__(
        self,
        catalog: Catalog,
        store: EndpointStore,
        *,
        backend_factory: BackendFactory | None = None,
        check_models: bool = True,
        external_policy: ExternalPolicy | None = None,
    ) -> None:
        """Build from the server's catalog and the store of API-managed endpoints.

        Args:
            catalog: endpoints of the server's catalog (bundled defaults, catalog file).
            store: endpoints created or changed through the API.
            backend_factory: builds backends (None: vLLM for local models, OpenAI client for
                external ones).
            check_models: check at create/update time that local models exist.
            external_policy: the API bases and secret scopes external models may use
                (default: no base for non-admins).
        """
        self.registry = EndpointRegistry(catalog, store)
        """Every endpoint's record, the catalog served now, permission lookups."""
        self.deployments = Deployments(
            self.registry, backend_factory=backend_factory, check_models=check_models
        )
        """Backends, engine health and background deployments."""
        self.store = store
        self.redactor = self.deployments.redactor
        """The process's redactor (:mod:`ai_query.redaction`); it learns each key in use."""
        self.external_policy = external_policy or ExternalPolicy()
        """Which API bases and secret scopes endpoint configs may use."""

    @property
    def _factory(self) -> BackendFactory | None:
        """What builds this server's backends (None: the default factory)."""
        return self.deployments.factory

    # ---- reading (the registry) ----------------------------------------------------------

    def catalog(self) -> Catalog:
        """The endpoints served right now (thread-safe: an immutable snapshot)."""
        return self.registry.catalog()

    def subscribe(self, listener: Callable[[Catalog], None]) -> None:
        """Call ``listener(catalog)`` now and whenever the served endpoints change.

        The server uses it to keep the engine behind Flight on the same endpoints.
        """
        self.registry.subscribe(listener)

    def records(self) -> list[EndpointRecord]:
        """Every endpoint's record: the catalog's first, then those created through the API."""
        return self.registry.records()

    def record(self, name: str) -> EndpointRecord:
        """The record of endpoint ``name`` (:class:`ResourceNotFoundError` when none)."""
        return self.registry.record(name)

    def record_by_id(self, endpoint_id: str) -> EndpointRecord:
        """The record whose ``id`` (or, as a convenience, name) is ``endpoint_id``."""
        return self.registry.record_by_id(endpoint_id)

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint (or alias) ``name`` as served now (see
        :meth:`EndpointRegistry.endpoint <ai_query.serving.registry.EndpointRegistry.endpoint>`)."""
        return self.registry.endpoint(name)

    # ---- permissions (the registry) ------------------------------------------------------

    def level(self, who: Identity, record: EndpointRecord) -> PermissionLevel | None:
        """The strongest level ``who`` holds on ``record``'s endpoint (None: none)."""
        return self.registry.level(who, record)

    def authorize(self, who: Identity, name: str, needed: PermissionLevel) -> EndpointRecord:
        """The record of endpoint (or alias) ``name``, if ``who`` holds ``needed`` on it."""
        return self.registry.authorize(who, name, needed)

    def check_query(self, who: Identity, name: str) -> None:
        """Raise unless ``who`` may query endpoint (or alias) ``name`` (Flight's check)."""
        self.registry.check_query(who, name)

    def set_permissions(self, record: EndpointRecord, acl: ACL, *, add: bool = False) -> ACL:
        """Replace (or with ``add``, extend) the access control list of ``record``'s endpoint."""
        return self.registry.set_permissions(record, acl, add=add)

    # ---- serving (the deployments) -------------------------------------------------------

    def backend(self, entity: ServedEntity) -> Backend:
        """The process's shared backend for ``entity``."""
        return self.deployments.backend(entity)

    def entity_health(self, entity: ServedEntity) -> EngineHealth:
        """The health of ``entity``'s engine (``NOT_STARTED`` until a request needs it)."""
        return self.deployments.entity_health(entity)

    def endpoint_health(self, record: EndpointRecord) -> EngineHealth | None:
        """The least ready engine of the endpoint's served config (None: no config served)."""
        return self.deployments.endpoint_health(record)

    def readiness(self, record: EndpointRecord) -> str:
        """Databricks' ``state.ready`` (``READY`` or ``NOT_READY``)."""
        return self.deployments.readiness(record)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the engine loop (where backends live) and await it from here."""
        return await self.deployments.run(coro)

    # ---- management ----------------------------------------------------------------------

    def create(self, body: Any, who: Identity) -> EndpointRecord:
        """Create an endpoint from a Databricks create body; its config deploys in background.
        ``who`` becomes its creator, with ``CAN_MANAGE``.

        Raises:
            PermissionDeniedError: when ``who`` may not create endpoints, or may not use an
                external model's secret scope or API base.
            ConfigError: an invalid body.
            ResourceConflictError: the name is taken.
        """
        require_create(who)
        principal = who.name
        if not isinstance(body, dict):
            raise ConfigError("the request body must be a JSON object")
        endpoint = _validate(lambda: Endpoint.model_validate(body), "")
        self.external_policy.check(who, endpoint)
        if self.registry.taken(endpoint.name):
            raise ResourceConflictError(
                f"endpoint {endpoint.name!r} already exists", code="RESOURCE_ALREADY_EXISTS"
            )
        self.deployments.check_entities(endpoint)
        now = now_ms()
        record = EndpointRecord(
            name=endpoint.name,
            id=uuid.uuid4().hex,
            creator=principal,
            creation_timestamp=now,
            last_updated_timestamp=now,
            config_version=0,
            served=None,
            pending=endpoint,
            ready="NOT_READY",
            config_update="IN_PROGRESS",
            acl=creator_acl(principal),
        )
        self.registry.save(record)
        self.deployments.deploy_later(record.name)
        log.info("endpoint %s: created by %s", record.name, principal)
        return record

    def update_config(self, name: str, body: Any, who: Identity) -> EndpointRecord:
        """Replace the served entities and traffic of ``name``; deploys in background.
        (The caller checks ``who``'s ``CAN_MANAGE``; this checks its external models.)

        Raises:
            PermissionDeniedError: when ``who`` may not use an external model's secret scope
                or API base.
            ConfigError: an invalid config.
            ResourceNotFoundError: unknown endpoint.
            ResourceConflictError: an update is running.
        """
        record = self.registry.record(name)
        if record.config_update == "IN_PROGRESS":
            raise ResourceConflictError(
                f"endpoint {name!r} is being updated; try again when it is done"
            )
        config = _validate(lambda: EndpointConfig.model_validate(body), "config")
        endpoint = record.latest.model_copy(update={"config": config})
        self.external_policy.check(who, endpoint)
        self.deployments.check_entities(endpoint)
        record = record.evolve(
            pending=endpoint,
            config_update="IN_PROGRESS",
            message=None,
            last_updated_timestamp=now_ms(),
        )
        self.registry.save(record)
        self.deployments.deploy_later(name)
        log.info("endpoint %s: config update started", name)
        return record

    def set_rate_limits(self, name: str, body: Any) -> list[RateLimit]:
        """Replace the rate limits of ``name`` (takes effect at once)."""
        raw = body.get("rate_limits", []) if isinstance(body, dict) else None
        if not isinstance(raw, list):
            raise ConfigError("body must be {'rate_limits': [...]}")
        limits = [
            _validate(lambda r=r: RateLimit.model_validate(r), f"rate_limits[{i}]")
            for i, r in enumerate(raw)
        ]
        self._change(name, rate_limits=limits)
        return limits

    def patch_tags(self, name: str, body: Any) -> list[Tag]:
        """Add (or overwrite) and delete tags of ``name``."""
        if not isinstance(body, dict):
            raise ConfigError("body must be {'add_tags': [...], 'delete_tags': [...]}")
        add = [
            _validate(lambda t=t: Tag.model_validate(t), f"add_tags[{i}]")
            for i, t in enumerate(body.get("add_tags") or [])
        ]
        delete = set(body.get("delete_tags") or [])
        added = {t.key for t in add}
        current = self.registry.record(name).latest.tags
        tags = [t for t in current if t.key not in delete and t.key not in added] + add
        self._change(name, tags=tags)
        return tags

    def delete(self, name: str) -> None:
        """Delete an endpoint created through the API.

        Raises:
            ResourceNotFoundError: when unknown.
            ConfigError: for an endpoint of the server's catalog.
        """
        record = self.registry.record(name)
        if record.origin != "api":
            raise ConfigError(
                f"endpoint {name!r} is defined by the server's catalog and cannot be deleted"
            )
        self.registry.remove(name)
        log.info("endpoint %s: deleted", name)

    # ---- lifecycle (the deployments) -----------------------------------------------------

    async def start(self, *, warmup: bool = False) -> None:
        """Resume deployments cut short by a restart; with ``warmup`` start every model now."""
        await self.deployments.start(warmup=warmup)

    async def stop(self) -> None:
        """Cancel deployments in progress (they resume at the next start)."""
        await self.deployments.stop()

    async def wait_deployed(self) -> None:
        """Wait until every deployment in progress has finished (for tests and shutdown)."""
        await self.deployments.wait_deployed()

    # ---- internals -----------------------------------------------------------------------

    def _change(self, name: str, **fields: Any) -> None:
        """Apply an immediate change (rate limits, tags) to the served and pending endpoint."""
        record = self.registry.record(name)
        served = record.served.model_copy(update=fields) if record.served else None
        pending = record.pending.model_copy(update=fields) if record.pending else None
        self.registry.save(
            record.evolve(served=served, pending=pending, last_updated_timestamp=now_ms())
        )


def _validate(build: Any, prefix: str) -> Any:
    """``build()``, its validation errors as one :class:`ConfigError` naming ``prefix``."""
    try:
        return build()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, prefix)) from exc
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
