"""The endpoint registry: every endpoint's record, the catalog served now, and who may do what.

:class:`EndpointRegistry` holds the records of the server's catalog (bundled defaults and the
catalog file, read-only except for config, rate limits and tags, which the API may override)
and of the endpoints created through the management API (kept in
:class:`~ai_query.serving.store.EndpointStore`). Its :meth:`~EndpointRegistry.catalog` is the
union of the endpoints with a served config: an immutable snapshot that any thread may read
(the Flight server reads it too, so SQL sees endpoints created over HTTP). Permission lookups
on records live here; starting models does not (:mod:`ai_query.serving.deployment`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from ai_query.catalog import Catalog, Endpoint
from ai_query.errors import EngineUnavailableError, ResourceNotFoundError
from ai_query.serving.permissions import (
    ACL,
    CATALOG_ACL,
    Identity,
    PermissionLevel,
    level_of,
    merge,
    require,
    resolve_acl,
)
from ai_query.serving.store import EndpointRecord, EndpointStore


def now_ms() -> int:
    """The time now in milliseconds (the records' timestamps)."""
    return int(time.time() * 1000)


class EndpointRegistry:
    """The records of every endpoint (catalog and API), their versions and permissions."""

    def __init__(self, catalog: Catalog, store: EndpointStore) -> None:
        """Build from the server's catalog and the store of API-managed endpoints.

        Args:
            catalog: endpoints of the server's catalog (bundled defaults, catalog file).
            store: endpoints created or changed through the API.
        """
        self.store = store
        """Where API-managed records persist."""
        self.aliases = catalog.aliases()
        """The catalog's aliases (alias -> endpoint name)."""
        started = now_ms()
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
        self._listeners: list[Callable[[Catalog], None]] = []
        self._catalog = Catalog([])
        self._rebuild()

    # ---- reading -------------------------------------------------------------------------

    def catalog(self) -> Catalog:
        """The endpoints served right now (thread-safe: an immutable snapshot)."""
        return self._catalog

    def subscribe(self, listener: Callable[[Catalog], None]) -> None:
        """Call ``listener(catalog)`` now and whenever the served endpoints change."""
        self._listeners.append(listener)
        listener(self._catalog)

    def records(self) -> list[EndpointRecord]:
        """Every endpoint's record: the catalog's first, then those created through the API."""
        merged = {**self._static, **self._stored}
        return list(merged.values())

    def stored_records(self) -> list[EndpointRecord]:
        """The records of endpoints created or changed through the API."""
        return list(self._stored.values())

    def stored(self, name: str) -> EndpointRecord | None:
        """The API-managed record of ``name``, if any (None after a delete)."""
        return self._stored.get(name)

    def taken(self, name: str) -> bool:
        """Whether ``name`` names an endpoint or an alias already."""
        return name in self._stored or name in self._static or name in self.aliases

    def record(self, name: str) -> EndpointRecord:
        """The record of endpoint ``name``.

        Raises:
            ResourceNotFoundError: when there is none.
        """
        found = self._stored.get(name) or self._static.get(name)
        if found is None:
            raise not_found(name)
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

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint (or alias) ``name`` as served now.

        Raises:
            ResourceNotFoundError: when unknown.
            EngineUnavailableError: when it has no ready config yet.
        """
        target = self.aliases.get(name, name)
        record = self._stored.get(target) or self._static.get(target)
        if record is None:
            raise not_found(name)
        if record.served is None:
            raise EngineUnavailableError(
                f"endpoint {name!r} is not ready ({record.config_update})"
            )
        return record.served

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
        record = self.record(self.aliases.get(name, name))
        require(who, record.acl, needed, name)
        return record

    def check_query(self, who: Identity, name: str) -> None:
        """Raise unless ``who`` may query endpoint (or alias) ``name`` (Flight's check; an
        unknown name passes: the engine names the known ones).

        Raises:
            PermissionDeniedError: when ``who`` lacks ``CAN_QUERY``.
        """
        acl = resolve_acl(name, {r.name: r.acl for r in self.records()}, self.aliases)
        if acl is not None:
            require(who, acl, PermissionLevel.CAN_QUERY, name)

    def set_permissions(self, record: EndpointRecord, acl: ACL, *, add: bool = False) -> ACL:
        """Replace (or with ``add``, extend) the access control list of ``record``'s endpoint."""
        current = self.record(record.name)
        new = merge(current.acl, acl) if add else acl
        self.save(current.evolve(acl=new, last_updated_timestamp=now_ms()))
        return new

    # ---- writing -------------------------------------------------------------------------

    def save(self, record: EndpointRecord) -> None:
        """Keep ``record`` (in the store too) and publish the new catalog."""
        self._stored[record.name] = record
        self.store.put(record)
        self._rebuild()

    def remove(self, name: str) -> None:
        """Forget the API-managed endpoint ``name`` and publish the new catalog."""
        self._stored.pop(name, None)
        self.store.delete(name)
        self._rebuild()

    def _rebuild(self) -> None:
        endpoints = [r.served for r in self.records() if r.served is not None]
        names = {e.name for e in endpoints}
        aliases = {a: t for a, t in self.aliases.items() if t in names}
        self._catalog = Catalog(endpoints, aliases)
        for listener in self._listeners:
            listener(self._catalog)


def not_found(name: str) -> ResourceNotFoundError:
    """The error for an endpoint ``name`` that does not exist."""
    return ResourceNotFoundError(f"endpoint {name!r} does not exist")
