"""Reading the small JSON/YAML/TOML files users write (catalogs, secrets, tokens, jobs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ai_query.errors import AIQueryError, ConfigError


def read_data_file(
    path: Path, what: str, error: type[AIQueryError] = ConfigError, *, show_parse_error: bool = True
) -> Any:
    """Parse ``path`` by its suffix: ``.yaml``/``.yml``, ``.toml``, else JSON.

    Args:
        path: the file.
        what: what the file is, for messages (``catalog``, ``secrets file``...).
        error: the exception class to raise.
        show_parse_error: include the parser's message (off for files holding secrets).

    Raises:
        error: when the file cannot be read or does not parse, naming the file.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from exc
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except Exception as exc:
        detail = f": {exc}" if show_parse_error else ""
        raise error(f"{what} {path} does not parse{detail}") from exc
