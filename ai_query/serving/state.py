"""The live set of serving endpoints: catalog + API-managed endpoints, deployments, backends.

:class:`ServingState` is the one model of what the server serves. Its :meth:`catalog` is the
union of the server's catalog (bundled defaults and the catalog file, read-only except for
config, rate limits and tags, which the API may override) and the endpoints created through
the management API (kept in :class:`~ai_query.serving.store.EndpointStore`). A new
config is deployed in the background (its models started) while the old one keeps serving;
the swap happens when every served entity is ready. The Flight server reads the same
:meth:`catalog`, so SQL sees endpoints created over HTTP.

Everything here runs on the HTTP server's event loop, except :meth:`catalog`, which any thread
may call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
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
from ai_query.engine.backends.registry import BackendFactory, existing_backend, shared_backend
from ai_query.engine.core.loop import shared_loop
from ai_query.engine.process.supervision import EngineHealth, EngineState, worst_health
from ai_query.errors import (
    AIQueryError,
    ConfigError,
    EngineUnavailableError,
    ResourceConflictError,
    ResourceNotFoundError,
)
from ai_query.redaction import REDACTOR
from ai_query.secrets import resolve_secret
from ai_query.serving.permissions import (
    ACL,
    CATALOG_ACL,
    ExternalPolicy,
    Identity,
    PermissionLevel,
    creator_acl,
    level_of,
    merge,
    require,
    require_create,
    resolve_acl,
)
from ai_query.serving.store import EndpointRecord, EndpointStore

log = logging.getLogger(__name__)
T = TypeVar("T")


def _now_ms() -> int:
    return int(time.time() * 1000)


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
        self.store = store
        self.redactor = REDACTOR
        """The process's redactor (:mod:`ai_query.redaction`); it learns each key in use."""
        self._factory = backend_factory
        self._check_models = check_models
        self.external_policy = external_policy or ExternalPolicy()
        """Which API bases and secret scopes endpoint configs may use."""
        self._aliases = catalog.aliases()
        started = _now_ms()
        self._static: dict[str, EndpointRecord] = {
            ep.name: EndpointRecord(
                name=ep.name,
                id=hashlib.sha256(ep.name.encode()).hexdigest()[:32],
                creator="system",
                creation_timestamp=started,
                last_updated_timestamp=started,
                config_version=1,
                served=ep,
                ready="READY",
                origin="catalog",
                acl=CATALOG_ACL,
            )
            for ep in catalog.endpoints()
        }
        self._stored: dict[str, EndpointRecord] = {r.name: r for r in store.load()}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[Callable[[Catalog], None]] = []
        self._catalog = Catalog([])
        self._rebuild()

    # ---- reading -------------------------------------------------------------------------

    def catalog(self) -> Catalog:
        """The endpoints served right now (thread-safe: an immutable snapshot)."""
        return self._catalog

    def subscribe(self, listener: Callable[[Catalog], None]) -> None:
        """Call ``listener(catalog)`` now and whenever the served endpoints change.

        The server uses it to keep the engine behind Flight on the same endpoints.
        """
        self._listeners.append(listener)
        listener(self._catalog)

    def records(self) -> list[EndpointRecord]:
        """Every endpoint's record: the catalog's first, then those created through the API."""
        merged = {**self._static, **self._stored}
        return list(merged.values())

    def record(self, name: str) -> EndpointRecord:
        """The record of endpoint ``name``.

        Raises:
            ResourceNotFoundError: when there is none.
        """
        found = self._stored.get(name) or self._static.get(name)
        if found is None:
            raise _not_found(name)
        return found

    def record_by_id(self, endpoint_id: str) -> EndpointRecord:
        """The record whose ``id`` (or, as a convenience, name) is ``endpoint_id``.

        Raises:
            ResourceNotFoundError: when there is none.
        """
        for record in self.records():
            if record.id == endpoint_id:
                return record
        return self.record(endpoint_id)

    # ---- permissions ---------------------------------------------------------------------

    def level(self, who: Identity, record: EndpointRecord) -> PermissionLevel | None:
        """The strongest level ``who`` holds on ``record``'s endpoint (None: none)."""
        return level_of(who, record.acl)

    def authorize(self, who: Identity, name: str, needed: PermissionLevel) -> EndpointRecord:
        """The record of endpoint (or alias) ``name``, if ``who`` holds ``needed`` on it.

        Raises:
            ResourceNotFoundError: when unknown.
            PermissionDeniedError: when ``who`` lacks ``needed`` (an alias has its target's).
        """
        record = self.record(self._aliases.get(name, name))
        require(who, record.acl, needed, name)
        return record

    def check_query(self, who: Identity, name: str) -> None:
        """Raise unless ``who`` may query endpoint (or alias) ``name`` (Flight's check; an
        unknown name passes: the engine names the known ones).

        Raises:
            PermissionDeniedError: when ``who`` lacks ``CAN_QUERY``.
        """
        acl = resolve_acl(name, {r.name: r.acl for r in self.records()}, self._aliases)
        if acl is not None:
            require(who, acl, PermissionLevel.CAN_QUERY, name)

    def set_permissions(self, record: EndpointRecord, acl: ACL, *, add: bool = False) -> ACL:
        """Replace (or with ``add``, extend) the access control list of ``record``'s endpoint."""
        current = self.record(record.name)
        new = merge(current.acl, acl) if add else acl
        self._save(current.evolve(acl=new, last_updated_timestamp=_now_ms()))
        return new

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint (or alias) ``name`` as served now.

        Raises:
            ResourceNotFoundError: when unknown.
            EngineUnavailableError: when it has no ready config yet.
        """
        target = self._aliases.get(name, name)
        record = self._stored.get(target) or self._static.get(target)
        if record is None:
            raise _not_found(name)
        if record.served is None:
            raise EngineUnavailableError(
                f"endpoint {name!r} is not ready ({record.config_update})"
            )
        return record.served

    def backend(self, entity: ServedEntity) -> Backend:
        """The process's shared backend for ``entity``."""
        return shared_backend(entity, self._factory)

    def entity_health(self, entity: ServedEntity) -> EngineHealth:
        """The health of ``entity``'s engine (``NOT_STARTED`` until a request needs it)."""
        backend = existing_backend(entity, self._factory)
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
        endpoint = self._validate(lambda: Endpoint.model_validate(body), "")
        self.external_policy.check(who, endpoint)
        if endpoint.name in self._stored or endpoint.name in self._static or (
            endpoint.name in self._aliases
        ):
            raise ResourceConflictError(
                f"endpoint {endpoint.name!r} already exists", code="RESOURCE_ALREADY_EXISTS"
            )
        self._check_entities(endpoint)
        now = _now_ms()
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
        self._save(record)
        self._deploy_later(record.name)
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
        record = self.record(name)
        if record.config_update == "IN_PROGRESS":
            raise ResourceConflictError(
                f"endpoint {name!r} is being updated; try again when it is done"
            )
        config = self._validate(lambda: EndpointConfig.model_validate(body), "config")
        endpoint = record.latest.model_copy(update={"config": config})
        self.external_policy.check(who, endpoint)
        self._check_entities(endpoint)
        record = record.evolve(
            pending=endpoint,
            config_update="IN_PROGRESS",
            message=None,
            last_updated_timestamp=_now_ms(),
        )
        self._save(record)
        self._deploy_later(name)
        log.info("endpoint %s: config update started", name)
        return record

    def set_rate_limits(self, name: str, body: Any) -> list[RateLimit]:
        """Replace the rate limits of ``name`` (takes effect at once)."""
        raw = body.get("rate_limits", []) if isinstance(body, dict) else None
        if not isinstance(raw, list):
            raise ConfigError("body must be {'rate_limits': [...]}")
        limits = [
            self._validate(lambda r=r: RateLimit.model_validate(r), f"rate_limits[{i}]")
            for i, r in enumerate(raw)
        ]
        self._change(name, rate_limits=limits)
        return limits

    def patch_tags(self, name: str, body: Any) -> list[Tag]:
        """Add (or overwrite) and delete tags of ``name``."""
        if not isinstance(body, dict):
            raise ConfigError("body must be {'add_tags': [...], 'delete_tags': [...]}")
        add = [
            self._validate(lambda t=t: Tag.model_validate(t), f"add_tags[{i}]")
            for i, t in enumerate(body.get("add_tags") or [])
        ]
        delete = set(body.get("delete_tags") or [])
        added = {t.key for t in add}
        current = self.record(name).latest.tags
        tags = [t for t in current if t.key not in delete and t.key not in added] + add
        self._change(name, tags=tags)
        return tags

    def delete(self, name: str) -> None:
        """Delete an endpoint created through the API.

        Raises:
            ResourceNotFoundError: when unknown.
            ConfigError: for an endpoint of the server's catalog.
        """
        record = self.record(name)
        if record.origin != "api":
            raise ConfigError(
                f"endpoint {name!r} is defined by the server's catalog and cannot be deleted"
            )
        self._stored.pop(name, None)
        self.store.delete(name)
        self._rebuild()
        log.info("endpoint %s: deleted", name)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self, *, warmup: bool = False) -> None:
        """Resume deployments cut short by a restart; with ``warmup`` start every model now."""
        for record in list(self._stored.values()):
            if record.pending is not None and record.config_update == "IN_PROGRESS":
                self._deploy_later(record.name)
        for record in self.records():
            if record.served is not None:
                self._learn_secrets(record.served)
        if warmup:
            for record in self.records():
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

    # ---- internals -----------------------------------------------------------------------

    def _validate(self, build: Any, prefix: str) -> Any:
        try:
            return build()
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, prefix)) from exc
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def _check_entities(self, endpoint: Endpoint) -> None:
        """Fail now, not in the background, on a missing secret or model."""
        for entity in endpoint.config.served_entities:
            try:
                if entity.external_model is not None:
                    self._learn_secrets(endpoint, strict=True)
                elif self._check_models:
                    from ai_query.catalog import BUNDLED_MODELS
                    from ai_query.engine.backends.bundled import resolve_model_dir

                    if str(entity.entity_name) not in BUNDLED_MODELS:
                        resolve_model_dir(str(entity.entity_name))
            except AIQueryError as exc:
                raise ConfigError(f"served entity {entity.served_name!r}: {exc}") from exc

    def _learn_secrets(self, endpoint: Endpoint, *, strict: bool = False) -> None:
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

    def _change(self, name: str, **fields: Any) -> None:
        """Apply an immediate change (rate limits, tags) to the served and pending endpoint."""
        record = self.record(name)
        served = record.served.model_copy(update=fields) if record.served else None
        pending = record.pending.model_copy(update=fields) if record.pending else None
        self._save(
            record.evolve(served=served, pending=pending, last_updated_timestamp=_now_ms())
        )

    def _save(self, record: EndpointRecord) -> None:
        self._stored[record.name] = record
        self.store.put(record)
        self._rebuild()

    def _rebuild(self) -> None:
        endpoints = [r.served for r in self.records() if r.served is not None]
        names = {e.name for e in endpoints}
        aliases = {a: t for a, t in self._aliases.items() if t in names}
        self._catalog = Catalog(endpoints, aliases)
        for listener in self._listeners:
            listener(self._catalog)

    def _deploy_later(self, name: str) -> None:
        self._spawn(self._deploy(name), f"deploy:{name}")

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
        record = self._stored.get(name)
        if record is None or record.pending is None:
            return
        target = record.pending
        message = None
        try:
            await self._warm(target)
        except Exception as exc:  # noqa: BLE001 - any start failure fails this deployment
            message = self.redactor(f"{type(exc).__name__}: {exc}")
            log.warning("endpoint %s: deployment failed: %s", name, message)
        current = self._stored.get(name)
        if current is None or current.pending is not target:
            return  # deleted or superseded meanwhile
        if message is not None:
            self._save(current.evolve(pending=None, config_update="UPDATE_FAILED", message=message))
            return
        self._save(
            current.evolve(
                served=target,
                pending=None,
                ready="READY",
                config_update="NOT_UPDATING",
                config_version=current.config_version + 1,
                last_updated_timestamp=_now_ms(),
            )
        )
        log.info("endpoint %s: config version %d is ready", name, current.config_version + 1)


def _not_found(name: str) -> ResourceNotFoundError:
    return ResourceNotFoundError(f"endpoint {name!r} does not exist")
