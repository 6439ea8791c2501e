"""SQL types of ``ai_query`` results: parse ``returnType`` DDL once, render it per dialect.

:class:`SQLType` is the one in-memory form of a result type. It is built from Databricks/Spark
DDL (``STRUCT<label: STRING>``, ``label STRING, score DOUBLE``) or DuckDB DDL
(``STRUCT(label VARCHAR)``, ``VARCHAR[]``) by :func:`parse_return_type`, and rendered back as
DDL for a target dialect, as a JSON schema for guided decoding, or as stable JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ai_query.errors import ConfigError, SQLParseError
from ai_query.sql.ddl_parser import parse_ddl

#: Canonical kinds, as Spark spells them.
SCALAR_KINDS: frozenset[str] = frozenset(
    {
        "STRING",
        "BOOLEAN",
        "TINYINT",
        "SMALLINT",
        "INT",
        "BIGINT",
        "FLOAT",
        "DOUBLE",
        "DECIMAL",
        "DATE",
        "TIMESTAMP",
        "BINARY",
    }
)
NESTED_KINDS: frozenset[str] = frozenset({"ARRAY", "STRUCT", "MAP"})
DIALECTS: frozenset[str] = frozenset({"databricks", "spark", "duckdb"})
#: Deepest nesting of ARRAY, STRUCT and MAP types a result may have (``STRING`` is 0 levels,
#: ``ARRAY<STRING>`` 1). Results cross Arrow IPC (Flight to the engine server, Spark's Arrow
#: UDFs), whose reader refuses types nested deeper than 64 Arrow levels ("Max recursion depth
#: reached"), and a MAP is two Arrow levels (a list of key/value structs): 24 leaves room for
#: any mix, and for the structs that wrap a result on its way.
MAX_TYPE_DEPTH = 24

_DUCKDB_NAMES: dict[str, str] = {
    "STRING": "VARCHAR",
    "INT": "INTEGER",
    "BINARY": "BLOB",
}
_JSON_SCALARS: dict[str, dict[str, Any]] = {
    "STRING": {"type": "string"},
    "BINARY": {"type": "string"},
    "BOOLEAN": {"type": "boolean"},
    # Integers are bounded to the type's range so guided decoding cannot overflow it.
    "TINYINT": {"type": "integer", "minimum": -(2**7), "maximum": 2**7 - 1},
    "SMALLINT": {"type": "integer", "minimum": -(2**15), "maximum": 2**15 - 1},
    "INT": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    "BIGINT": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    "FLOAT": {"type": "number"},
    "DOUBLE": {"type": "number"},
    "DECIMAL": {"type": "number"},
    "DATE": {"type": "string", "format": "date"},
    "TIMESTAMP": {"type": "string", "format": "date-time"},
}
_DQ = '"'
_SIMPLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Field names that must be quoted in a type DDL string even though they look simple.
_RESERVED_NAMES: frozenset[str] = frozenset(
    {
        "all", "and", "array", "as", "between", "by", "case", "cast", "create", "cross",
        "default", "distinct", "else", "end", "except", "false", "from", "full", "group",
        "having", "in", "inner", "intersect", "interval", "into", "is", "join", "left",
        "like", "limit", "map", "not", "null", "on", "or", "order", "outer", "right",
        "select", "struct", "table", "then", "to", "true", "union", "using", "when",
        "where", "with",
    }
)  # fmt: skip


@dataclass(frozen=True)
class SQLType:
    """A result type of ``ai_query``, in canonical (Spark) kinds.

    Attributes:
        kind: upper-case kind, one of :data:`SCALAR_KINDS` or :data:`NESTED_KINDS`.
        element: the element type of an ARRAY.
        fields: ``(name, type)`` pairs of a STRUCT, names with their case preserved.
        key: the key type of a MAP.
        value: the value type of a MAP.
        precision: DECIMAL precision.
        scale: DECIMAL scale.
    """

    kind: str
    element: SQLType | None = None
    fields: tuple[tuple[str, SQLType], ...] = ()
    key: SQLType | None = None
    value: SQLType | None = None
    precision: int | None = None
    scale: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCALAR_KINDS | NESTED_KINDS:
            raise SQLParseError(f"bad returnType: unknown type kind {self.kind!r}")
        if self.kind == "ARRAY" and self.element is None:
            raise SQLParseError("bad returnType: ARRAY needs an element type")
        if self.kind == "MAP" and (self.key is None or self.value is None):
            raise SQLParseError("bad returnType: MAP needs a key and a value type")
        if self.kind == "STRUCT":
            names = [name.lower() for name, _ in self.fields]
            if not names:
                raise SQLParseError("bad returnType: STRUCT needs at least one field")
            if len(set(names)) != len(names):
                raise SQLParseError(f"bad returnType: duplicate STRUCT field in {names}")

    @classmethod
    def string(cls) -> SQLType:
        """The STRING type."""
        return cls("STRING")

    @classmethod
    def array(cls, element: SQLType) -> SQLType:
        """An ARRAY of ``element``."""
        return cls("ARRAY", element=element)

    @classmethod
    def struct(cls, fields: list[tuple[str, SQLType]] | tuple[tuple[str, SQLType], ...]) -> SQLType:
        """A STRUCT with the given ``(name, type)`` fields, in order."""
        return cls("STRUCT", fields=tuple(fields))

    @classmethod
    def map(cls, key: SQLType, value: SQLType) -> SQLType:
        """A MAP from ``key`` to ``value``."""
        return cls("MAP", key=key, value=value)

    @classmethod
    def decimal(cls, precision: int = 10, scale: int = 0) -> SQLType:
        """A DECIMAL(precision, scale); Spark's default is DECIMAL(10, 0)."""
        return cls("DECIMAL", precision=precision, scale=scale)

    @property
    def is_string(self) -> bool:
        """True for the plain STRING type."""
        return self.kind == "STRING"

    @property
    def depth(self) -> int:
        """How deeply ARRAY, STRUCT and MAP types nest in this one (0 for a scalar); no
        recursion, so any depth is measured."""
        deepest = 0
        todo: list[tuple[SQLType, int]] = [(self, 0)]
        while todo:
            typ, level = todo.pop()
            children = [c for c in (typ.element, typ.key, typ.value) if c is not None]
            children += [t for _, t in typ.fields]
            if children:
                level += 1
                todo += [(child, level) for child in children]
            deepest = max(deepest, level)
        return deepest

    def to_ddl(self, dialect: str) -> str:
        """Render as a type DDL string of ``dialect`` ("databricks", "spark" or "duckdb").

        Raises:
            ConfigError: on an unknown dialect.
        """
        if dialect not in DIALECTS:
            raise ConfigError(f"unknown dialect {dialect!r}; expected one of {sorted(DIALECTS)}")
        duck = dialect == "duckdb"
        if self.kind == "ARRAY":
            inner = _need(self.element).to_ddl(dialect)
            return f"{inner}[]" if duck else f"ARRAY<{inner}>"
        if self.kind == "MAP":
            key, value = _need(self.key).to_ddl(dialect), _need(self.value).to_ddl(dialect)
            return f"MAP({key}, {value})" if duck else f"MAP<{key}, {value}>"
        if self.kind == "STRUCT":
            if duck:
                parts = [f"{_quote(name, _DQ)} {typ.to_ddl(dialect)}" for name, typ in self.fields]
                return f"STRUCT({', '.join(parts)})"
            parts = [f"{_quote(name, '`')}: {typ.to_ddl(dialect)}" for name, typ in self.fields]
            return f"STRUCT<{', '.join(parts)}>"
        if self.kind == "DECIMAL":
            return f"DECIMAL({self.precision}, {self.scale})"
        return _DUCKDB_NAMES.get(self.kind, self.kind) if duck else self.kind

    def to_json_schema(self) -> dict[str, Any]:
        """A JSON schema that admits exactly the JSON encodings of this type.

        STRUCTs are closed objects with every field required, as strict structured output needs.
        """
        if self.kind == "STRUCT":
            return {
                "type": "object",
                "properties": {name: typ.to_json_schema() for name, typ in self.fields},
                "required": [name for name, _ in self.fields],
                "additionalProperties": False,
            }
        if self.kind == "ARRAY":
            return {"type": "array", "items": _need(self.element).to_json_schema()}
        if self.kind == "MAP":
            return {"type": "object", "additionalProperties": _need(self.value).to_json_schema()}
        return dict(_JSON_SCALARS[self.kind])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict holding only the attributes that are set."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.element is not None:
            out["element"] = self.element.to_dict()
        if self.fields:
            out["fields"] = [[name, typ.to_dict()] for name, typ in self.fields]
        if self.key is not None:
            out["key"] = self.key.to_dict()
        if self.value is not None:
            out["value"] = self.value.to_dict()
        if self.precision is not None:
            out["precision"] = self.precision
        if self.scale is not None:
            out["scale"] = self.scale
        return out

    def to_json(self) -> str:
        """A stable, compact JSON serialisation (cache keys, shipping to other processes)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> SQLType:
        """Inverse of :meth:`to_dict`.

        Raises:
            SQLParseError: when ``data`` is not a valid type dict.
        """
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            raise SQLParseError(
                f"bad returnType JSON: expected an object with a kind, got {data!r}"
            )
        try:
            element = data.get("element")
            key, value = data.get("key"), data.get("value")
            return cls(
                kind=data["kind"],
                element=None if element is None else cls.from_dict(element),
                fields=tuple((str(n), cls.from_dict(t)) for n, t in data.get("fields", ())),
                key=None if key is None else cls.from_dict(key),
                value=None if value is None else cls.from_dict(value),
                precision=data.get("precision"),
                scale=data.get("scale"),
            )
        except (TypeError, ValueError) as exc:
            raise SQLParseError(f"bad returnType JSON {data!r}: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> SQLType:
        """Inverse of :meth:`to_json`.

        Raises:
            SQLParseError: when ``text`` is not a serialised type.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SQLParseError(f"bad returnType JSON {text!r}: {exc}") from exc
        return cls.from_dict(data)


def _need(child: SQLType | None) -> SQLType:
    # Nested kinds always have their children (checked in __post_init__); this narrows the type.
    if child is None:
        raise SQLParseError("bad returnType: nested type without its element type")
    return child


def _quote(name: str, quote: str) -> str:
    if _SIMPLE_NAME.match(name) and name.lower() not in _RESERVED_NAMES:
        return name
    return quote + name.replace(quote, quote * 2) + quote


def parse_return_type(ddl: str, *, argument: str = "returnType") -> SQLType:
    """Parse a ``returnType`` DDL string into a :class:`SQLType`.

    Accepts Databricks/Spark DDL (``STRUCT<label: STRING, score DOUBLE>``, ``ARRAY<STRING>``,
    ``MAP<STRING, INT>``, ``DECIMAL(10,2)``, aliases such as ``LONG`` or ``INTEGER``), a bare
    Spark schema (``label STRING, score DOUBLE``, a STRUCT) and DuckDB DDL
    (``STRUCT(label VARCHAR)``, ``VARCHAR[]``, ``MAP(VARCHAR, INTEGER)``), case-insensitively.

    Args:
        ddl: the DDL string.
        argument: the ``ai_query`` argument it came from, for the nesting error.

    Raises:
        SQLParseError: message ``bad returnType '<ddl>': ...``, with the position when known.
        ConfigError: the type nests deeper than :data:`MAX_TYPE_DEPTH`.
    """
    if not isinstance(ddl, str):
        raise SQLParseError(f"bad returnType {ddl!r}: expected a DDL string")
    # Measured on the text first: the parser recurses once per level, so a type nested
    # thousands of levels deep would exhaust Python's stack before it could be measured.
    _check_depth(_bracket_depth(ddl), argument)
    typ = parse_ddl(ddl, SQLType)
    _check_depth(typ.depth, argument)  # DuckDB's VARCHAR[][]... nests without brackets
    return typ


def _check_depth(depth: int, argument: str) -> None:
    """Refuse a result type (of ``argument``) nested ``depth`` levels deep, over the limit.

    Raises:
        ConfigError: naming the depth found and :data:`MAX_TYPE_DEPTH`.
    """
    if depth > MAX_TYPE_DEPTH:
        raise ConfigError(
            f"bad {argument}: its ARRAY, STRUCT and MAP types nest {depth} levels deep; at most "
            f"{MAX_TYPE_DEPTH} are supported (results cross Arrow, which carries no deeper types)"
        )


_DEPTH_TOKEN = re.compile(
    r"""`(?:[^`]|``)*` | "(?:[^"]|"")*" | '(?:[^'\\]|\\.|'')*' | [A-Za-z_][A-Za-z0-9_]* | [<>()]""",
    re.VERBOSE,
)
_NESTED_WORDS = frozenset({"ARRAY", "STRUCT", "ROW", "MAP"})


def _bracket_depth(ddl: str) -> int:
    """How deeply the brackets of nested types (``ARRAY<``, ``STRUCT(`` ...) nest in ``ddl``;
    brackets of scalars (``DECIMAL(10, 2)``) and inside quoted names do not count."""
    opened: list[bool] = []  # per open bracket: whether it opens a nested type
    deepest = level = 0
    previous = ""
    for match in _DEPTH_TOKEN.finditer(ddl):
        token = match.group()
        if token in ("<", "("):
            nested = previous.upper() in _NESTED_WORDS
            opened.append(nested)
            level += nested
            deepest = max(deepest, level)
        elif token in (">", ")") and opened:
            level -= opened.pop()
        previous = token
    return deepest


def embedding_type() -> SQLType:
    """The result type of an embeddings endpoint: ARRAY<FLOAT>."""
    return SQLType.array(SQLType("FLOAT"))


def error_struct(result: SQLType) -> SQLType:
    """The result type under ``failOnError => false``: STRUCT<result: T, errorMessage: STRING>."""
    return SQLType.struct((("result", result), ("errorMessage", SQLType.string())))
