"""What an ``ai_query`` call returns: ``responseFormat`` parsing and the resolved output spec.

:func:`resolve_output` combines the endpoint's task, ``returnType`` and ``responseFormat`` into
one :class:`OutputSpec`: the SQL type of the result and the guided-decoding constraint to give
the engine. Databricks' rules are followed: ``returnType`` on a chat endpoint means structured
output of that type; an OpenAI-style ``responseFormat`` keeps a STRING result holding JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ai_query.errors import ConfigError, SQLParseError
from ai_query.sql.types import MAX_TYPE_DEPTH, SQLType, parse_return_type
from ai_query.tasks import TASKS, Task

#: How a ``choice`` responseFormat picks its answer (see :attr:`ResponseFormat.scoring`).
CHOICE_SCORING = ("logprobs", "generate")
#: JSON-schema keywords whose value is one subschema.
_ONE_SUBSCHEMA = frozenset({
    "items", "additionalProperties", "additionalItems", "contains", "not", "if", "then",
    "else", "propertyNames", "unevaluatedItems", "unevaluatedProperties",
})  # fmt: skip
#: JSON-schema keywords whose value maps names to subschemas.
_NAMED_SUBSCHEMAS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
#: JSON-schema keywords whose value is a list of subschemas.
_SUBSCHEMA_LISTS = frozenset({"anyOf", "allOf", "oneOf", "prefixItems", "items"})


@dataclass(frozen=True, kw_only=True)
class ResponseFormat:
    """A parsed ``responseFormat`` argument."""

    kind: str = "text"
    """One of "text", "json_object", "json_schema", "choice"."""
    choices: tuple[str, ...] = ()
    """The allowed answers, for kind "choice" (an ai_query extension: vLLM's guided choice)."""
    scoring: str = "logprobs"
    """For kind "choice": ``logprobs`` (each answer scored by the model's own probability of it,
    where the backend can read one; else generated) or ``generate`` (guided decoding only)."""
    prefix: str = ""
    """For kind "choice": words a scored answer starts with before the choice."""
    scores: bool = False
    """For kind "choice": answer JSON ``{"label": ..., "logprobs": [...]}`` (a log-probability
    per choice, in order; null where the answer was generated) instead of the label."""
    schema: dict[str, Any] | None = None
    """The JSON schema, for kind "json_schema"."""
    name: str | None = None
    """The schema's name from an OpenAI-style ``json_schema`` object."""
    sql_type: SQLType | None = None
    """The STRUCT type when the format was given as DDL (the result then has that type)."""
    confidence: bool = False
    """For a typed ``json_schema`` (an ai_query extension, ``"confidence": true``): answer
    ``STRUCT<response: T, confidence: STRUCT<field: DOUBLE, ...>>``, each top-level field's
    probability (:mod:`ai_query.engine.backends.field_confidence`)."""


@dataclass(frozen=True, kw_only=True)
class OutputSpec:
    """The resolved output of one ``ai_query`` call."""

    sql_type: SQLType
    """SQL type of the result (before any failOnError => false wrapping)."""
    json_schema: dict[str, Any] | None = None
    """JSON schema for guided decoding; None when the output is not schema-constrained."""
    json_object: bool = False
    """True when the model must produce some JSON object (``json_object`` mode)."""
    parse_json: bool = False
    """True when the engine's JSON text must be parsed into :attr:`sql_type`."""
    choice: tuple[str, ...] | None = None
    """The only answers guided decoding may produce (a STRING result), or None."""
    scoring: str = "logprobs"
    """How a choice is made: see :attr:`ResponseFormat.scoring`."""
    prefix: str = ""
    """Words a scored choice follows: see :attr:`ResponseFormat.prefix`."""
    scores: bool = False
    """A choice answers with its scores: see :attr:`ResponseFormat.scores`."""
    confidence: tuple[str, ...] = ()
    """The fields whose confidence the answer carries: see :attr:`ResponseFormat.confidence`."""


def parse_response_format(value: str | None) -> ResponseFormat:
    """Parse a ``responseFormat`` argument.

    Accepts None or ``'text'``, ``'json_object'``, an OpenAI-style JSON object string
    (``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}``, or
    ``{"type": "json_object"}`` / ``{"type": "text"}``; a ``json_schema`` object may add
    ``"returnType": "<DDL>"``, the SQL type its answers are read as, as ``ai_extract`` does to
    keep its fields' descriptions in the schema), a guided choice
    ``{"type": "choice", "choice": ["a", "b"]}`` (an extension the task functions use), or a
    DDL ``STRUCT<...>`` string.

    Raises:
        ConfigError: message ``bad responseFormat ...`` on anything else, and on a type or
            schema nested deeper than :data:`~ai_query.sql.types.MAX_TYPE_DEPTH`.
    """
    if value is None:
        return ResponseFormat()
    if not isinstance(value, str):
        raise ConfigError(f"bad responseFormat {value!r}: expected a string")
    text = value.strip()
    if text.lower() in ("text", "json_object"):
        return ResponseFormat(kind=text.lower())
    if text.startswith("{"):
        return _from_openai_json(value)
    if text[:6].upper() == "STRUCT":
        try:
            sql_type = parse_return_type(text, argument="responseFormat")
        except SQLParseError as exc:
            raise ConfigError(f"bad responseFormat {value!r}: {exc}") from exc
        return ResponseFormat(
            kind="json_schema", schema=sql_type.to_json_schema(), sql_type=sql_type
        )
    raise ConfigError(
        f"bad responseFormat {value!r}: expected 'text', 'json_object', "
        "an OpenAI json_schema JSON string or a DDL STRUCT<...> string"
    )


def _from_openai_json(value: str) -> ResponseFormat:
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"bad responseFormat {value!r}: not valid JSON ({exc})") from exc
    except RecursionError as exc:  # Python's json recurses once per level
        raise ConfigError(
            f"bad responseFormat: its JSON nests too deeply to read; a schema may nest at most "
            f"{MAX_TYPE_DEPTH} levels"
        ) from exc
    kind = data.get("type") if isinstance(data, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(kind=kind)
    if kind == "choice":
        choices = data.get("choice")
        if (
            not isinstance(choices, list)
            or len(choices) < 1
            or not all(isinstance(c, str) and c for c in choices)
        ):
            raise ConfigError(
                f"bad responseFormat {value!r}: 'choice' must be a list of non-empty strings"
            )
        scoring = data.get("scoring", "logprobs")
        if scoring not in CHOICE_SCORING:
            raise ConfigError(
                f"bad responseFormat {value!r}: 'scoring' must be one of "
                f"{', '.join(CHOICE_SCORING)}"
            )
        return ResponseFormat(
            kind="choice",
            choices=tuple(choices),
            scoring=scoring,
            prefix=str(data.get("prefix") or "").strip(),
            scores=bool(data.get("scores", False)),
        )
    if kind != "json_schema":
        raise ConfigError(
            f"bad responseFormat {value!r}: 'type' must be text, json_object, json_schema "
            "or choice"
        )
    spec = data.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise ConfigError(
            f"bad responseFormat {value!r}: json_schema needs a 'json_schema' object "
            "with a 'schema' object"
        )
    depth = schema_depth(schema)
    if depth > MAX_TYPE_DEPTH:
        # Not an Arrow type (the result is its JSON text), but the guided-decoding grammar's
        # build time grows with the nesting (xgrammar: 2.4 s for 200 levels, 1,000 fail), and
        # a schema and the DDL that says the same stay interchangeable.
        raise ConfigError(
            f"bad responseFormat: its JSON schema nests subschemas {depth} levels deep; at most "
            f"{MAX_TYPE_DEPTH} are supported"
        )
    name = spec.get("name") if isinstance(spec, dict) else None
    sql_type = None
    if data.get("returnType") is not None:  # ai_extract: the schema's fields, typed
        try:
            sql_type = parse_return_type(str(data["returnType"]), argument="responseFormat")
        except SQLParseError as exc:
            raise ConfigError(f"bad responseFormat {value!r}: {exc}") from exc
    confidence = bool(data.get("confidence", False))
    if confidence and (sql_type is None or sql_type.kind != "STRUCT"):
        raise ConfigError(
            f"bad responseFormat {value!r}: 'confidence' needs a 'returnType' STRUCT<...>"
        )
    return ResponseFormat(
        kind="json_schema",
        schema=schema,
        name=name if isinstance(name, str) else None,
        sql_type=sql_type,
        confidence=confidence,
    )


def schema_depth(schema: Any) -> int:
    """How deeply subschemas (``properties``, ``items``, ``anyOf`` ...) nest in a JSON schema:
    0 for ``{"type": "string"}``, 1 for an object of strings; no recursion."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(schema, 0)]
    while todo:
        node, level = todo.pop()
        if not isinstance(node, dict):
            continue
        children: list[Any] = []
        for key, value in node.items():
            if key in _ONE_SUBSCHEMA and isinstance(value, dict):
                children.append(value)
            elif key in _NAMED_SUBSCHEMAS and isinstance(value, dict):
                children += value.values()
            elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
                children += value
        if children:
            level += 1
            todo += [(child, level) for child in children]
        deepest = max(deepest, level)
    return deepest


def resolve_output(return_type: str | None, response_format: str | None, task: str) -> OutputSpec:
    """Resolve a call's result type and decoding constraint from its arguments and task.

    Args:
        return_type: the ``returnType`` DDL string, or None.
        response_format: the ``responseFormat`` string, or None.
        task: the endpoint's task, one of :class:`~ai_query.tasks.Task`.

    Raises:
        ConfigError: on an unknown task, a returnType or responseFormat the task does not
            allow, a returnType and responseFormat that disagree, or a type nested deeper
            than :data:`~ai_query.sql.types.MAX_TYPE_DEPTH`.
        SQLParseError: when ``return_type`` is not valid DDL.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown endpoint task {task!r}; expected one of {', '.join(TASKS)}")
    declared = parse_return_type(return_type) if return_type is not None else None
    if task == Task.EMBEDDINGS:
        return _resolve_embeddings(declared, return_type, response_format)
    fmt = parse_response_format(response_format) if response_format is not None else None
    if declared is not None and fmt is not None:
        # Databricks refuses the pair too: each alone says what the result is.
        raise ConfigError(
            f"give returnType or responseFormat, not both (returnType {return_type!r}, "
            f"responseFormat {response_format!r})"
        )
    if declared is not None and not declared.is_string:
        return OutputSpec(sql_type=declared, json_schema=declared.to_json_schema(), parse_json=True)
    if fmt is None or fmt.kind == "text":
        return OutputSpec(sql_type=SQLType.string())
    if fmt.kind == "choice":
        return OutputSpec(
            sql_type=SQLType.string(),
            choice=fmt.choices,
            scoring=fmt.scoring,
            prefix=fmt.prefix,
            scores=fmt.scores,
        )
    if fmt.sql_type is not None and fmt.confidence:
        return OutputSpec(
            sql_type=with_confidence(fmt.sql_type),
            json_schema=fmt.schema,
            parse_json=True,
            confidence=tuple(name for name, _ in fmt.sql_type.fields),
        )
    if fmt.sql_type is not None:
        return OutputSpec(sql_type=fmt.sql_type, json_schema=fmt.schema, parse_json=True)
    # OpenAI-style json_schema / json_object: the result stays a STRING holding the JSON text.
    return OutputSpec(
        sql_type=SQLType.string(),
        json_schema=fmt.schema,
        json_object=fmt.kind == "json_object",
    )


def with_confidence(struct: SQLType) -> SQLType:
    """``STRUCT<response: struct, confidence: STRUCT<field: DOUBLE, ...>>`` (see
    :attr:`ResponseFormat.confidence`)."""
    scores = SQLType.struct([(name, SQLType("DOUBLE")) for name, _ in struct.fields])
    return SQLType.struct([("response", struct), ("confidence", scores)])


def _resolve_embeddings(
    declared: SQLType | None, return_type: str | None, response_format: str | None
) -> OutputSpec:
    if response_format is not None:
        raise ConfigError(
            f"responseFormat {response_format!r} is not allowed on an embeddings endpoint"
        )
    allowed = (SQLType.array(SQLType("FLOAT")), SQLType.array(SQLType("DOUBLE")))
    if declared is not None and declared not in allowed:
        raise ConfigError(
            f"returnType {return_type!r} is not allowed on an embeddings endpoint; "
            "use ARRAY<FLOAT> or ARRAY<DOUBLE>, or leave it out"
        )
    return OutputSpec(sql_type=declared or allowed[0], parse_json=True)

