"""Bearer-token authentication shared by the HTTP and Flight servers.

A tokens file (JSON or YAML) maps each token to the principal it authenticates, given as a
name or as an object with the principal's groups and the secret scopes it may reference::

    {"dapi-3f9c...": "alice@example.com",
     "dapi-77aa...": {"principal": "etl-service", "groups": ["can_create_endpoints"],
                      "secret_scopes": ["llm"]},
     "dapi-01bd...": {"principal": "root", "groups": ["admins"]}}

Every authenticated principal is also in group ``users`` (see
:mod:`ai_query.serving.permissions`). With no tokens file, auth is off and every caller is
:data:`ANONYMOUS_IDENTITY`, an administrator (local development). Tokens are kept only as
SHA-256 digests, so a lookup does not compare secrets character by character, and no token is
ever logged. The file is re-read when it changes (checked at most once a second), so tokens can
be added or revoked without a restart.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ai_query.datafile import read_data_file
from ai_query.errors import AuthenticationError, ConfigError
from ai_query.serving.permissions import ADMINS, Identity

#: The principal of every caller when auth is off.
ANONYMOUS = "anonymous"
#: Every caller when auth is off: an administrator (auth off is for local development).
ANONYMOUS_IDENTITY = Identity.of(ANONYMOUS, groups=(ADMINS,))
#: Keys of a tokens-file entry given as an object.
_ENTRY_KEYS = frozenset({"principal", "groups", "secret_scopes"})


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuth:
    """Maps bearer tokens to principals (with their groups); thread-safe."""

    def __init__(self, tokens: Mapping[str, Any] | None = None, *, path: Path | None = None):
        """Build from a mapping of token -> principal, or (with ``path``) from a tokens file.

        Args:
            tokens: token -> principal name or ``{"principal", "groups", "secret_scopes"}``;
                None with no ``path`` turns auth off.
            path: a tokens file, re-read when it changes.

        Raises:
            ConfigError: when the file cannot be read or is not a mapping of strings.
        """
        self._path = Path(path).expanduser() if path is not None else None
        self._lock = threading.Lock()
        self._mtime = 0.0
        self._checked = 0.0
        self._by_digest: dict[str, Identity] = {}
        if self._path is not None:
            self._reload()
        elif tokens is not None:
            self._by_digest = _digests(tokens, "tokens")
        self.enabled = self._path is not None or tokens is not None
        """True when requests must carry a valid token."""

    @classmethod
    def from_file(cls, path: str | Path | None) -> TokenAuth:
        """Auth from a tokens file; ``None`` turns auth off."""
        return cls(path=Path(path)) if path is not None else cls()

    def authenticate(self, token: str | None) -> str:
        """The principal a bearer token stands for (:data:`ANONYMOUS` when auth is off).

        Raises:
            AuthenticationError: when auth is on and the token is missing or unknown.
        """
        return self.identify(token).name

    def identify(self, token: str | None) -> Identity:
        """The principal, groups and secret scopes a bearer token stands for
        (:data:`ANONYMOUS_IDENTITY` when auth is off).

        Raises:
            AuthenticationError: when auth is on and the token is missing or unknown.
        """
        if not self.enabled:
            return ANONYMOUS_IDENTITY
        if not token:
            raise AuthenticationError("a bearer token is required (Authorization: Bearer <token>)")
        self._maybe_reload()
        found = self._by_digest.get(_digest(token))
        if found is None:
            raise AuthenticationError("the bearer token is not valid")
        return found

    def authenticate_header(self, authorization: str | None) -> str:
        """:meth:`authenticate` for an ``Authorization`` header value (``Bearer <token>``)."""
        return self.identify_header(authorization).name

    def identify_header(self, authorization: str | None) -> Identity:
        """:meth:`identify` for an ``Authorization`` header value (``Bearer <token>``)."""
        token = None
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                token = value.strip()
        return self.identify(token)

    def _maybe_reload(self) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        try:
            mtime = self._path.stat().st_mtime
        except OSError:
            return  # keep the last good tokens while the file is being replaced
        if mtime != self._mtime:
            try:
                self._reload()
            except ConfigError:
                return  # a half-written file: keep the last good tokens

    def _reload(self) -> None:
        assert self._path is not None
        path = self._path
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise ConfigError(f"cannot read tokens file {path}: {exc.strerror}") from exc
        data = read_data_file(path, "tokens file", show_parse_error=False)  # no token in messages
        by_digest = _digests(data, f"tokens file {path}")
        with self._lock:
            self._by_digest = by_digest
            self._mtime = mtime


def _digests(data: object, source: str) -> dict[str, Identity]:
    problem = (
        f"{source} must map bearer tokens to principal names, or to objects "
        "{principal: name, groups: [...], secret_scopes: [...]}"
    )
    if not isinstance(data, Mapping):
        raise ConfigError(problem)
    out = {}
    for i, (token, entry) in enumerate(data.items()):
        if not isinstance(token, str) or not token:
            raise ConfigError(problem)
        identity = _identity(entry)
        if identity is None:  # never name the token: entries are counted instead
            raise ConfigError(f"{problem} (entry {i + 1} is not)")
        out[_digest(token)] = identity
    return out


def _identity(entry: object) -> Identity | None:
    """The identity of one tokens-file entry; None when it is malformed."""
    if isinstance(entry, str):
        return Identity.of(entry) if entry else None
    if not isinstance(entry, Mapping) or set(entry) - _ENTRY_KEYS:
        return None
    name = entry.get("principal")
    groups = entry.get("groups") or []
    scopes = entry.get("secret_scopes") or []
    if not isinstance(name, str) or not name:
        return None
    for values in (groups, scopes):
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            return None
    return Identity.of(name, groups, scopes)
