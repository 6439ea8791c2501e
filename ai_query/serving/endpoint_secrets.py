"""Plain-text API keys of API-made endpoints, kept out of the endpoint database.

An external model created with ``openai_api_key_plaintext`` needs its key again after a
restart, but the SQLite file (and its WAL) must not hold it: copies of a database outlive the
rows deleted from it. :class:`EndpointSecrets` keeps the keys in their own small JSON file
(mode 0600, written atomically, beside the database: ``<db stem>-secrets.json``) and the stored
endpoint holds a reference, ``{{endpoint-secrets/<id>}}``, in their place. The file holds, per
endpoint, exactly the keys its stored configs use: a key is gone once its endpoint is deleted
or no served or pending config of it uses the key any more.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from ai_query.catalog import Endpoint

_PREFIX = "{{endpoint-secrets/"
_REFERENCE = re.compile(r"^\{\{endpoint-secrets/([0-9a-f]{32})\}\}$")
#: Permissions of the files holding endpoints and their keys.
PRIVATE_MODE = 0o600


def secrets_path(database: Path) -> Path:
    """Where the keys of the endpoints in ``database`` are kept."""
    return database.with_name(f"{database.stem}-secrets.json")


def make_private(path: Path) -> None:
    """Create ``path`` (empty) readable by its owner only, or restrict it if it exists."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    os.chmod(path, PRIVATE_MODE)


class EndpointSecrets:
    """The plain-text keys of stored endpoints, by endpoint name; thread-safe."""

    def __init__(self, path: Path | None) -> None:
        """Open the keys file ``path`` (None: keep nothing, the database is in memory)."""
        self.path = path
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, str]] = {}
        if path is not None and path.exists():
            make_private(path)
            data = json.loads(path.read_text() or "{}")
            if isinstance(data, dict):
                self._keys = {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}

    def seal(self, name: str, endpoints: list[Endpoint | None]) -> list[str | None]:
        """The JSON of each of endpoint ``name``'s ``endpoints`` with plain-text keys replaced
        by references; the keys file then holds exactly the keys these use."""
        if self.path is None:
            return [None if e is None else e.model_dump_json(exclude_none=True) for e in endpoints]
        with self._lock:
            old = self._keys.get(name, {})
            by_value = {v: k for k, v in old.items()}
            kept: dict[str, str] = {}
            texts: list[str | None] = []
            for endpoint in endpoints:
                if endpoint is None:
                    texts.append(None)
                    continue
                data = endpoint.model_dump(mode="json", exclude_none=True)
                for config in _openai_configs(data):
                    value = config.get("openai_api_key_plaintext")
                    if not isinstance(value, str):
                        continue
                    ref = by_value.get(value) or uuid.uuid4().hex
                    by_value[value] = ref
                    kept[ref] = value
                    config["openai_api_key_plaintext"] = f"{_PREFIX}{ref}}}}}"
                texts.append(json.dumps(data))
            if kept != old:
                self._set(name, kept)
        return texts

    def unseal(self, text: str) -> dict[str, Any]:
        """A stored endpoint's JSON as data, references replaced by their keys (a reference
        whose key is lost stays as it is: calls with it fail at the provider)."""
        data = json.loads(text)
        with self._lock:
            known = {ref: v for keys in self._keys.values() for ref, v in keys.items()}
        for config in _openai_configs(data):
            match = _REFERENCE.match(str(config.get("openai_api_key_plaintext", "")))
            if match and match.group(1) in known:
                config["openai_api_key_plaintext"] = known[match.group(1)]
        return data

    def forget(self, name: str) -> None:
        """Drop every key of endpoint ``name``."""
        with self._lock:
            if name in self._keys:
                self._set(name, {})

    def _set(self, name: str, keys: dict[str, str]) -> None:
        if keys:
            self._keys[name] = keys
        else:
            self._keys.pop(name, None)
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
        with os.fdopen(fd, "w") as out:
            json.dump(self._keys, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)


def has_plaintext_key(text: str) -> bool:
    """Whether a stored endpoint's JSON holds a plain-text key itself (an older file)."""
    data = json.loads(text)
    return any(
        isinstance(c.get("openai_api_key_plaintext"), str)
        and not _REFERENCE.match(c["openai_api_key_plaintext"])
        for c in _openai_configs(data)
    )


def _openai_configs(data: Any) -> list[dict[str, Any]]:
    """The ``openai_config`` objects of an endpoint's JSON data (changed in place)."""
    found = []
    entities = (data.get("config") or {}).get("served_entities") or []
    for entity in entities:
        external = entity.get("external_model") if isinstance(entity, dict) else None
        config = external.get("openai_config") if isinstance(external, dict) else None
        if isinstance(config, dict):
            found.append(config)
    return found
