"""Structured output that a small model can fill: tell it the schema, bound it, explain failures.

Guided decoding makes every token fit the JSON schema, but it cannot make the model close a
string: a small model that does not know what a field means opens a string and keeps writing
until ``max_tokens`` runs out, and the row cannot be parsed. Three general remedies live here:

- :func:`describe_schema` writes the schema as a readable instruction (field names, types,
  allowed values, and each field's ``description`` where the schema has one), sent to the model
  alongside the constraint, as hosted structured-output APIs tell their models the schema.
- :func:`bounded_schema` adds a ``maxLength`` to every string and a ``maxItems`` to every array
  where the user gave none, sized so that the whole answer fits the call's token budget; guided
  decoding (xgrammar) then closes a string at its bound. The user's own limits win.
- :func:`explain_unparsed` says in one line why an answer could not be parsed (e.g. it stopped
  at ``max_tokens`` inside the string of field ``abstract``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

__all__ = ["bounded_schema", "describe_schema", "explain_unparsed"]

#: Characters of JSON values the bounds allow per generated token. A token holds at least one
#: character of ASCII text, so a bound in characters is also one in tokens, whatever the model
#: writes (English runs at about four a token; a model that repeats punctuation or spaces
#: writes one: at two, one review in a hundred still ran its label into ``max_tokens``).
CHARS_PER_TOKEN = 1
#: The share of ``max_tokens`` kept for JSON's own tokens (keys, quotes, brackets).
SYNTAX_SHARE = 0.2
#: Items an array may hold when the user's schema sets no ``maxItems``.
DEFAULT_MAX_ITEMS = 8
#: The bounds given to one string, whatever the budget, in characters.
MIN_STRING_CHARS, MAX_STRING_CHARS = 16, 2000
#: String keywords that already restrict a string (a bound would be redundant or clash: xgrammar
#: does not combine ``pattern``/``format`` with length bounds).
_STRING_SHAPES = ("maxLength", "pattern", "format", "enum", "const")
#: Keywords whose value is a list of alternative subschemas.
_ALTERNATIVES = ("anyOf", "oneOf", "allOf")


def bounded_schema(schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """A copy of ``schema`` in which no string or array is unbounded.

    The token budget less :data:`SYNTAX_SHARE`, in characters (x :data:`CHARS_PER_TOKEN`), is
    shared out
    down the tree: an object splits its share evenly among its properties, an array among its
    items (at most :data:`DEFAULT_MAX_ITEMS` unless the schema says), and each string gets its
    share as ``maxLength`` (between :data:`MIN_STRING_CHARS` and :data:`MAX_STRING_CHARS`).
    A ``maxLength``/``maxItems`` the schema already has is kept, and so are strings that a
    ``pattern``, ``format``, ``enum`` or ``const`` shapes already.

    Args:
        schema: the JSON schema given to guided decoding (not changed).
        max_tokens: the call's token budget.
    """
    out = copy.deepcopy(schema)
    _bound(out, max(1, int(max_tokens * (1 - SYNTAX_SHARE))) * CHARS_PER_TOKEN)
    return out


def _bound(node: Any, chars: int) -> None:
    if not isinstance(node, dict):
        return
    types = node.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if "string" in types and not any(key in node for key in _STRING_SHAPES):
        node["maxLength"] = max(MIN_STRING_CHARS, min(MAX_STRING_CHARS, chars))
    items = node.get("items")
    if "array" in types or isinstance(items, dict):
        count = node.get("maxItems")
        if not isinstance(count, int) or count < 0:
            count = max(DEFAULT_MAX_ITEMS, int(node.get("minItems", 0) or 0))
            node["maxItems"] = count
        _bound(items, chars // max(1, count))
        for item in node.get("prefixItems", ()) or ():
            _bound(item, chars // max(1, count))
    properties = node.get("properties")
    if isinstance(properties, dict) and properties:
        share = chars // len(properties)
        for sub in properties.values():
            _bound(sub, share)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):  # a MAP: as many values as an array may hold items
        _bound(extra, chars // DEFAULT_MAX_ITEMS)
    for key in _ALTERNATIVES:
        for alternative in node.get(key, ()) or ():
            _bound(alternative, chars)
    for definition in (node.get("$defs") or node.get("definitions") or {}).values():
        _bound(definition, chars)


def describe_schema(schema: dict[str, Any]) -> str:
    """The schema as an instruction a small model can follow: one line per field, with its
    type, allowed values and description.

    >>> print(describe_schema({"type": "object", "properties": {"label": {"type": "string"}}}))
    Answer with one JSON object and nothing else. Fill every field from the text:
    - label: a string
    """
    lines = [f"Answer with one JSON {_kind(schema)} and nothing else."]
    fields = _fields(schema, 0)
    if fields:
        lines[0] += " Fill every field from the text:"
        lines += fields
    elif schema.get("description"):
        lines.append(str(schema["description"]))
    return "\n".join(lines)


def _fields(node: dict[str, Any], depth: int) -> list[str]:
    properties = node.get("properties")
    if not isinstance(properties, dict):
        items = node.get("items")
        return _fields(items, depth) if isinstance(items, dict) else []
    lines = []
    for name, sub in properties.items():
        sub = sub if isinstance(sub, dict) else {}
        line = f"{'  ' * depth}- {name}: {_type_phrase(sub)}"
        if sub.get("description"):
            line += f" ({sub['description']})"
        lines.append(line)
        lines += _fields(sub, depth + 1)
    return lines


def _kind(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if kind == "array" or "items" in node:
        return "array"
    if kind == "object" or "properties" in node:
        return "object"
    return "value"


def _type_phrase(node: dict[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return f"exactly {json.dumps(node['const'])}"
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "array" or "items" in node:
        items = node.get("items")
        inner = _type_phrase(items) if isinstance(items, dict) else "value"
        return "a list of " + _plural(inner)
    if kind == "object" or "properties" in node:
        if "properties" in node:
            return "an object with these fields:"
        return "an object mapping names to values"
    if "anyOf" in node or "oneOf" in node:
        alternatives = node.get("anyOf") or node.get("oneOf") or []
        return " or ".join(_type_phrase(a) for a in alternatives if isinstance(a, dict))
    return {
        "string": "a string",
        "integer": "a whole number",
        "number": "a number",
        "boolean": "true or false",
        "null": "null",
    }.get(str(kind), "a JSON value")


def _plural(phrase: str) -> str:
    for single, many in (
        ("a string", "strings"),
        ("a whole number", "whole numbers"),
        ("a number", "numbers"),
        ("an object", "objects"),
        ("a list", "lists"),
    ):
        if phrase.startswith(single):
            return many + phrase[len(single) :]
    return phrase


def explain_unparsed(text: str, finish_reason: str | None, error: str) -> str:
    """Why ``text`` is not a complete JSON answer, in one line.

    Args:
        text: the model's answer.
        finish_reason: why generation stopped (``length``: at ``max_tokens``).
        error: the JSON parser's message.
    """
    where = _open_at_end(text)
    if finish_reason == "length":
        where = where or "before its JSON was complete"
        return f"the model's answer stopped at max_tokens {where} (raise max_tokens)"
    if where is not None:
        return f"the model's answer ended {where} ({error})"
    return f"the model's answer is not valid JSON: {error}"


def _open_at_end(text: str) -> str | None:
    """Where an unfinished JSON text stops (inside the string of a field, in a field name, or
    in the JSON of a field); None when every string and bracket it opens is closed."""
    stack: list[list[Any]] = []  # per open object/array: [bracket, field being written]
    in_string = escaped = is_key = False
    start = 0
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if is_key:
                    stack[-1][1] = _decode(text[start : i + 1])
            continue
        if ch == '"':
            in_string, start = True, i
            is_key = bool(stack) and stack[-1][0] == "{" and _after_key_opener(text, i)
        elif ch in "{[":
            stack.append([ch, None])
        elif ch in "}]" and stack:
            stack.pop()
    if not stack and not in_string:
        return None
    if in_string and is_key:
        return "inside a field name"
    field = next((entry[1] for entry in reversed(stack) if entry[1] is not None), None)
    named = f" for field `{field}`" if field else ""
    return f"inside a string{named}" if in_string else f"inside the JSON{named}"


def _after_key_opener(text: str, quote: int) -> bool:
    """Whether the string opening at ``quote`` follows ``{`` or ``,`` (in an object: a key)."""
    return text[:quote].rstrip().endswith(("{", ","))


def _decode(quoted: str) -> str:
    try:
        return str(json.loads(quoted))
    except ValueError:
        return quoted.strip('"')
