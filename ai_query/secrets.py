"""Resolve ``{{secrets/scope/key}}`` references without ever logging their values.

Every value resolved here is added to the process's redactor (:mod:`ai_query.redaction`), so
it is masked on every surface the process has.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ai_query.config import secret_from_environment, settings
from ai_query.datafile import read_data_file
from ai_query.errors import ConfigError
from ai_query.redaction import remember_secret

_REFERENCE = re.compile(r"^\{\{\s*secrets/([^/\s}]+)/([^/\s}]+)\s*\}\}$")


def is_secret_reference(value: str) -> bool:
    """True when ``value`` has the form ``{{secrets/scope/key}}``."""
    return bool(_REFERENCE.match(value.strip()))


def resolve_secret(value: str, secrets_file: Path | None = None) -> str:
    """The plain value for a secret reference; other strings are returned unchanged.

    Looks in the environment (``AI_QUERY_SECRET_<SCOPE>_<KEY>``) first, then in the secrets
    file (``{"scope": {"key": "value"}}``, JSON or YAML).

    Raises:
        ConfigError: naming the reference (never a value) when it cannot be resolved.
    """
    match = _REFERENCE.match(value.strip())
    if not match:
        return value
    scope, key = match.groups()
    found = secret_from_environment(scope, key)
    if found is not None:
        remember_secret(found)
        return found
    path = secrets_file or settings().secrets_file
    if path is not None:
        data = _read_secrets_file(path)
        scoped = data.get(scope)
        if isinstance(scoped, dict) and isinstance(scoped.get(key), str):
            remember_secret(str(scoped[key]))
            return str(scoped[key])
    raise ConfigError(
        f"secret {{{{secrets/{scope}/{key}}}}} is not set: export "
        f"AI_QUERY_SECRET_{re.sub(r'[^A-Za-z0-9]', '_', f'{scope}_{key}').upper()} "
        "or add it to the file named by AI_QUERY_SECRETS_FILE"
    )


def _read_secrets_file(path: Path) -> dict[str, Any]:
    data = read_data_file(path, "secrets file", show_parse_error=False)  # no secret in messages
    if not isinstance(data, dict):
        raise ConfigError(f"secrets file {path} must hold an object of scopes")
    return data
