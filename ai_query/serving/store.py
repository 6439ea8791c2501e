"""Endpoints created or changed through the management API, kept in a SQLite file.

Each row holds what Databricks reports about an endpoint (id, creator, timestamps, config
version, state) and the endpoint itself as JSON in the catalog's shape: the config being
served and, while an update deploys, the pending one. Rows survive restarts; an update that was
deploying when the server stopped is deployed again at the next start. The file (and its WAL)
is readable by its owner only and never holds a plain-text API key: those live in
:class:`~ai_query.serving.endpoint_secrets.EndpointSecrets`, referenced from the stored config.
Each endpoint's access control list is kept beside it (table ``endpoint_permissions``, also
created in older files).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from ai_query.catalog import Endpoint
from ai_query.serving.endpoint_secrets import (
    PRIVATE_MODE,
    EndpointSecrets,
    has_plaintext_key,
    make_private,
    secrets_path,
)
from ai_query.serving.permissions import ACL, CATALOG_ACL, acl_from_data, acl_to_data, creator_acl

_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    creator TEXT NOT NULL,
    creation_timestamp INTEGER NOT NULL,
    last_updated_timestamp INTEGER NOT NULL,
    config_version INTEGER NOT NULL,
    served TEXT,
    pending TEXT,
    ready TEXT NOT NULL,
    config_update TEXT NOT NULL,
    message TEXT,
    origin TEXT NOT NULL
)
"""

_PERMISSIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoint_permissions (
    name TEXT PRIMARY KEY,
    acl TEXT NOT NULL
)
"""

_COLUMNS = (
    "name, id, creator, creation_timestamp, last_updated_timestamp, config_version, served, "
    "pending, ready, config_update, message, origin"
)


@dataclass(frozen=True, kw_only=True)
class EndpointRecord:
    """An endpoint and what Databricks reports about it."""

    name: str
    """Endpoint name."""
    id: str
    """Stable id (hex)."""
    creator: str
    """Principal that created it (``system`` for catalog endpoints)."""
    creation_timestamp: int
    """Creation time, epoch milliseconds."""
    last_updated_timestamp: int
    """Last change, epoch milliseconds."""
    config_version: int
    """Version of the served config (0 before the first one is ready)."""
    served: Endpoint | None
    """The endpoint as served now; None until the first config is ready."""
    pending: Endpoint | None = None
    """The endpoint being deployed, or None."""
    ready: str = "NOT_READY"
    """``READY`` or ``NOT_READY``."""
    config_update: str = "NOT_UPDATING"
    """``NOT_UPDATING``, ``IN_PROGRESS`` or ``UPDATE_FAILED``."""
    message: str | None = None
    """Why the last deployment failed, if it did."""
    origin: str = "api"
    """``api`` (created through the API) or ``catalog`` (a catalog endpoint changed by it)."""
    acl: ACL = ()
    """Who may view, query and manage it (see :mod:`ai_query.serving.permissions`)."""

    @property
    def latest(self) -> Endpoint:
        """The newest endpoint definition: pending if deploying, else served."""
        found = self.pending or self.served
        if found is None:
            raise ValueError(f"endpoint record {self.name!r} holds no endpoint")
        return found

    def evolve(self, **changes: object) -> EndpointRecord:
        """A copy with ``changes``."""
        return replace(self, **changes)  # type: ignore[arg-type]


class EndpointStore:
    """The endpoints table of one SQLite file (or memory); thread-safe."""

    def __init__(self, path: Path | None = None) -> None:
        """Open (and create) the store.

        Args:
            path: the database file; None keeps the endpoints in memory only.
        """
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            make_private(path)  # SQLite gives -wal and -shm the mode of the database
        self.secrets = EndpointSecrets(secrets_path(path) if path is not None else None)
        """Plain-text keys of the stored endpoints (see :mod:`.endpoint_secrets`)."""
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path) if path is not None else ":memory:", check_same_thread=False
        )
        self._db.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left behind
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_PERMISSIONS_SCHEMA)
        self._db.commit()
        if path is not None:
            for extra in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                if extra.exists():
                    os.chmod(extra, PRIVATE_MODE)

    def load(self) -> list[EndpointRecord]:
        """Every stored endpoint, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM endpoints ORDER BY creation_timestamp, name"
            ).fetchall()
            acls = dict(self._db.execute("SELECT name, acl FROM endpoint_permissions").fetchall())
        records = [_with_acl(_record(row, self.secrets), acls.get(row[0])) for row in rows]
        older = [r for r, row in zip(records, rows, strict=True) if _holds_key(row)]
        for record in older:  # a file from before keys were kept apart: move them out
            self.put(record)
        if older:
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return records

    def put(self, record: EndpointRecord) -> None:
        """Insert or replace ``record`` (plain-text keys go to :attr:`secrets`)."""
        served, pending = self.secrets.seal(record.name, [record.served, record.pending])
        row = (
            record.name,
            record.id,
            record.creator,
            record.creation_timestamp,
            record.last_updated_timestamp,
            record.config_version,
            served,
            pending,
            record.ready,
            record.config_update,
            record.message,
            record.origin,
        )
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO endpoints ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            self._db.execute(
                "INSERT OR REPLACE INTO endpoint_permissions (name, acl) VALUES (?, ?)",
                (record.name, json.dumps(acl_to_data(record.acl))),
            )
            self._db.commit()

    def delete(self, name: str) -> None:
        """Forget endpoint ``name``."""
        with self._lock:
            self._db.execute("DELETE FROM endpoints WHERE name = ?", (name,))
            self._db.execute("DELETE FROM endpoint_permissions WHERE name = ?", (name,))
            self._db.commit()
        self.secrets.forget(name)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def _with_acl(record: EndpointRecord, stored: object) -> EndpointRecord:
    """``record`` with its stored list, or (none stored) the list its origin gives."""
    if stored is not None:
        return record.evolve(acl=acl_from_data(json.loads(str(stored))))
    return record.evolve(acl=CATALOG_ACL if record.origin == "catalog" else creator_acl(
        record.creator))


def _holds_key(row: tuple[object, ...]) -> bool:
    return any(row[i] and has_plaintext_key(str(row[i])) for i in (6, 7))


def _record(row: tuple[object, ...], secrets: EndpointSecrets) -> EndpointRecord:
    served = Endpoint.model_validate(secrets.unseal(str(row[6]))) if row[6] else None
    pending = Endpoint.model_validate(secrets.unseal(str(row[7]))) if row[7] else None
    return EndpointRecord(
        name=str(row[0]),
        id=str(row[1]),
        creator=str(row[2]),
        creation_timestamp=int(row[3]),  # type: ignore[call-overload]
        last_updated_timestamp=int(row[4]),  # type: ignore[call-overload]
        config_version=int(row[5]),  # type: ignore[call-overload]
        served=served,
        pending=pending,
        ready=str(row[8]),
        config_update=str(row[9]),
        message=None if row[10] is None else str(row[10]),
        origin=str(row[11]),
    )
