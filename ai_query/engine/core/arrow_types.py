"""SQL types (parsed once by :mod:`ai_query.sql.types`) as Arrow types, and JSON values coerced
into them.

Structured output arrives as JSON text; :func:`coerce` checks a decoded value against the
declared type and returns a Python value Arrow can store, or raises ``ValueError`` saying what
does not fit (which becomes that row's error message).
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pyarrow as pa

from ai_query.sql.types import SQLType

_SCALARS: dict[str, pa.DataType] = {
    "STRING": pa.string(),
    "BOOLEAN": pa.bool_(),
    "TINYINT": pa.int8(),
    "SMALLINT": pa.int16(),
    "INT": pa.int32(),
    "BIGINT": pa.int64(),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),
    "BINARY": pa.binary(),
}
_INT_RANGES = {"TINYINT": 8, "SMALLINT": 16, "INT": 32, "BIGINT": 64}


def to_arrow(t: SQLType) -> pa.DataType:
    """The Arrow type for a SQL type."""
    if t.kind in _SCALARS:
        return _SCALARS[t.kind]
    if t.kind == "DECIMAL":
        return pa.decimal128(t.precision or 10, t.scale or 0)
    if t.kind == "ARRAY":
        assert t.element is not None
        return pa.list_(to_arrow(t.element))
    if t.kind == "STRUCT":
        return pa.struct([pa.field(name, to_arrow(ft)) for name, ft in t.fields])
    if t.kind == "MAP":
        assert t.key is not None and t.value is not None
        return pa.map_(to_arrow(t.key), to_arrow(t.value))
    raise ValueError(f"no Arrow type for SQL type {t.kind}")


def coerce(value: Any, t: SQLType, path: str = "result") -> Any:
    """Check a decoded JSON value against ``t`` and convert it for Arrow.

    Raises:
        ValueError: naming the path and what was expected.
    """
    if value is None:
        return None
    kind = t.kind
    if kind == "STRING":
        if isinstance(value, (dict, list)):
            raise ValueError(f"{path}: expected a string, got {type(value).__name__}")
        return value if isinstance(value, str) else _json_scalar_text(value)
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{path}: expected a boolean, got {value!r}")
    if kind in _INT_RANGES:
        number = _number(value, path)
        if number != int(number):
            raise ValueError(f"{path}: expected an integer, got {value!r}")
        bits = _INT_RANGES[kind]
        if not -(2 ** (bits - 1)) <= int(number) < 2 ** (bits - 1):
            raise ValueError(f"{path}: {value!r} is out of range for {kind}")
        return int(number)
    if kind in ("FLOAT", "DOUBLE"):
        return float(_number(value, path))
    if kind == "DECIMAL":
        try:
            return decimal.Decimal(str(value)).quantize(decimal.Decimal(1).scaleb(-(t.scale or 0)))
        except decimal.InvalidOperation as exc:
            raise ValueError(f"{path}: expected a decimal, got {value!r}") from exc
    if kind == "DATE":
        try:
            return dt.date.fromisoformat(str(value)[:10])
        except ValueError as exc:
            raise ValueError(f"{path}: expected a date YYYY-MM-DD, got {value!r}") from exc
    if kind == "TIMESTAMP":
        try:
            return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{path}: expected a timestamp, got {value!r}") from exc
    if kind == "BINARY":
        return str(value).encode()
    if kind == "ARRAY":
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected an array, got {type(value).__name__}")
        assert t.element is not None
        return [coerce(v, t.element, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "STRUCT":
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected an object, got {type(value).__name__}")
        lowered = {str(k).lower(): v for k, v in value.items()}
        return {
            name: coerce(value.get(name, lowered.get(name.lower())), ft, f"{path}.{name}")
            for name, ft in t.fields
        }
    if kind == "MAP":
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected an object, got {type(value).__name__}")
        assert t.key is not None and t.value is not None
        return [
            (coerce(k, t.key, f"{path} key"), coerce(v, t.value, f"{path}.{k}"))
            for k, v in value.items()
        ]
    raise ValueError(f"{path}: unsupported type {kind}")


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{path}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: expected a number, got {value!r}") from None


def _json_scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def json_default(value: Any, *, exact_decimals: bool = False) -> Any:
    """``json.dumps``' ``default`` for the Python values of Arrow columns.

    Dates and timestamps become ISO text, bytes UTF-8 text, decimals JSON numbers (what SQL
    engines read back into a DECIMAL column) or, with ``exact_decimals``, their exact text (the
    result cache gives back the very value it stored; :func:`coerce` reads the text).

    Raises:
        TypeError: for any other type (as ``json.dumps`` expects).
    """
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value) if exact_decimals else float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")
