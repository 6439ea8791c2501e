"""``ai_extract``'s schema argument, in Databricks' current form: names, or typed fields with
descriptions, nested objects and arrays.

The argument is an ``ARRAY<STRING>`` of field names, or JSON text: an array of names, or an
object mapping each field name to a description (a string) or to a field object ``{"type": ...,
"description": ...}`` where ``type`` is ``string``, ``integer``, ``number``, ``boolean``,
``enum`` (with its values in ``enum``, or ``labels``), ``object`` (its fields in
``properties``) or ``array`` (its element in ``items``). Every field is optional: a value the
text does not hold is NULL. The result is a STRUCT of the fields' SQL types; the model is
constrained by the matching JSON schema, whose ``description`` keywords tell it what each field
means (:func:`~ai_query.engine.backends.structured.describe_schema`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ai_query.errors import ConfigError
from ai_query.sql.types import MAX_TYPE_DEPTH, SQLType

#: Field type -> SQL type of a scalar field.
SCALARS: dict[str, SQLType] = {
    "string": SQLType.string(),
    "integer": SQLType("BIGINT"),
    "number": SQLType("DOUBLE"),
    "boolean": SQLType("BOOLEAN"),
    "enum": SQLType.string(),
}
FIELD_TYPES: tuple[str, ...] = (*SCALARS, "object", "array")
#: The most fields an extraction may name, all levels together.
MAX_FIELDS = 100


@dataclass(frozen=True)
class ExtractField:
    """One field to extract."""

    name: str
    """The field's name (the STRUCT field)."""
    kind: str = "string"
    """One of :data:`FIELD_TYPES`."""
    description: str = ""
    """What the field means, told to the model."""
    values: tuple[str, ...] = ()
    """The allowed values of an ``enum``."""
    fields: tuple[ExtractField, ...] = ()
    """An ``object``'s fields."""
    item: ExtractField | None = None
    """An ``array``'s element."""

    def sql_type(self) -> SQLType:
        """The field's SQL type."""
        if self.kind == "object":
            return SQLType.struct([(f.name, f.sql_type()) for f in self.fields])
        if self.kind == "array":
            assert self.item is not None
            return SQLType.array(self.item.sql_type())
        return SCALARS[self.kind]

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the field's value (null allowed: every field is optional)."""
        if self.kind == "object":
            schema: dict[str, Any] = object_schema(self.fields)
        elif self.kind == "array":
            assert self.item is not None
            schema = {"type": "array", "items": self.item.json_schema()}
        else:
            schema = dict(SCALARS[self.kind].to_json_schema())
            if self.values:
                schema["enum"] = list(self.values)
        schema = {"anyOf": [schema, {"type": "null"}]}
        if self.description:
            schema["description"] = self.description
        return schema


def object_schema(fields: tuple[ExtractField, ...]) -> dict[str, Any]:
    """The JSON schema of an object with ``fields`` (all present, each may be null)."""
    return {
        "type": "object",
        "properties": {f.name: f.json_schema() for f in fields},
        "required": [f.name for f in fields],
        "additionalProperties": False,
    }


def parse_fields(function: str, value: Any) -> tuple[ExtractField, ...]:
    """The fields of a schema argument (a list of names, or names -> descriptions or fields).

    Raises:
        ConfigError: a bad field name, type or nesting, or more than :data:`MAX_FIELDS` fields.
    """
    count = [0]
    fields = _fields(function, value, 1, count)
    if not fields:
        raise ConfigError(f"{function}: the schema names no field")
    return fields


def _fields(function: str, value: Any, depth: int, count: list[int]) -> tuple[ExtractField, ...]:
    if depth > MAX_TYPE_DEPTH:
        raise ConfigError(f"{function}: the schema nests deeper than {MAX_TYPE_DEPTH} levels")
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = [(name, None) for name in value]
    else:
        raise ConfigError(
            f"{function}: the schema must be an array of field names or an object of fields, "
            f"got {value!r}"
        )
    names = [name for name, _ in items]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"{function}: field names must be non-empty strings, got {names!r}")
    if len({n.strip() for n in names}) != len(names):
        raise ConfigError(f"{function}: field names must be distinct, got {names!r}")
    count[0] += len(items)
    if count[0] > MAX_FIELDS:
        raise ConfigError(f"{function}: the schema has more than {MAX_FIELDS} fields")
    return tuple(_field(function, name.strip(), spec, depth, count) for name, spec in items)


def _field(function: str, name: str, spec: Any, depth: int, count: list[int]) -> ExtractField:
    if spec is None or isinstance(spec, str):
        return ExtractField(name, description=(spec or "").strip())
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{function}: field {name!r} must be a description or an object with a 'type', "
            f"got {spec!r}"
        )
    kind = str(spec.get("type", "string")).lower()
    if kind not in FIELD_TYPES:
        raise ConfigError(
            f"{function}: field {name!r} has type {kind!r}; expected one of "
            f"{', '.join(FIELD_TYPES)}"
        )
    description = str(spec.get("description") or "").strip()
    if kind == "enum":
        values = spec.get("enum", spec.get("labels", spec.get("values")))
        if not isinstance(values, list) or not values or not all(
            isinstance(v, str) and v for v in values
        ):
            raise ConfigError(f"{function}: enum field {name!r} needs its values in 'enum'")
        return ExtractField(name, kind, description, values=tuple(values))
    if kind == "object":
        fields = _fields(function, spec.get("properties", spec.get("fields")), depth + 1, count)
        return ExtractField(name, kind, description, fields=fields)
    if kind == "array":
        items = spec.get("items", "string")
        item = _field(function, "item", {"type": items} if isinstance(items, str) else items,
                      depth + 1, count)  # fmt: skip
        return ExtractField(name, kind, description, item=item)
    return ExtractField(name, kind, description)
