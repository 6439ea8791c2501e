"""Bearer-token authentication shared by the HTTP and Flight servers.

A tokens file (JSON or YAML) maps each token to the principal it authenticates::

    {"dapi-3f9c...": "alice@example.com", "dapi-77aa...": "etl-service"}

With no tokens file, auth is off and every caller is :data:`ANONYMOUS`. Tokens are kept only as
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

from ai_query.datafile import read_data_file
from ai_query.errors import AuthenticationError, ConfigError

#: The principal of every caller when auth is off.
ANONYMOUS = "anonymous"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuth:
    """Maps bearer tokens to principals; thread-safe."""

    def __init__(self, tokens: Mapping[str, str] | None = None, *, path: Path | None = None):
        """Build from a mapping of token -> principal, or (with ``path``) from a tokens file.

        Args:
            tokens: token -> principal; None with no ``path`` turns auth off.
            path: a tokens file, re-read when it changes.

        Raises:
            ConfigError: when the file cannot be read or is not a mapping of strings.
        """
        self._path = Path(path).expanduser() if path is not None else None
        self._lock = threading.Lock()
        self._mtime = 0.0
        self._checked = 0.0
        self._by_digest: dict[str, str] = {}
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
        if not self.enabled:
            return ANONYMOUS
        if not token:
            raise AuthenticationError("a bearer token is required (Authorization: Bearer <token>)")
        self._maybe_reload()
        principal = self._by_digest.get(_digest(token))
        if principal is None:
            raise AuthenticationError("the bearer token is not valid")
        return principal

    def authenticate_header(self, authorization: str | None) -> str:
        """:meth:`authenticate` for an ``Authorization`` header value (``Bearer <token>``)."""
        token = None
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                token = value.strip()
        return self.authenticate(token)

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


def _digests(data: object, source: str) -> dict[str, str]:
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in data.items()
    ):
        raise ConfigError(f"{source} must map bearer tokens to principal names (both strings)")
    return {_digest(token): principal for token, principal in data.items()}
