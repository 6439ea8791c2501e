"""ai_mask's two halves around the model: the entities it asks for (one bounded string per
kind, as ai_extract asks) and the text with those entities replaced."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

#: What ai_mask puts in place of each entity.
MASK = "[MASKED]"
#: The longest entity ai_mask asks for, in characters.
MASK_MAX_CHARS = 64


def mask_format(labels: Sequence[str]) -> str:
    """ai_mask's responseFormat: a JSON schema with the entity of each kind, as ai_extract asks
    (a small model fills one string per kind far better than open lists; measured in
    bench/task_quality.py), bounded so it cannot ramble past its token budget."""
    entities = {"type": "string", "maxLength": MASK_MAX_CHARS}
    schema = {
        "type": "object",
        "properties": {label: entities for label in labels},
        "required": list(labels),
        "additionalProperties": False,
    }
    return json.dumps(
        {"type": "json_schema", "json_schema": {"name": "entities", "schema": schema}},
        separators=(",", ":"),
    )


def mask_entities(content: str, entities: Mapping[str, Any]) -> str:
    """``content`` with every listed entity that occurs in it replaced by :data:`MASK`."""
    found = {
        str(item).strip()
        for items in entities.values()
        for item in (items if isinstance(items, list) else [items])
        if item is not None
    }
    for entity in sorted((e for e in found if len(e) > 1), key=len, reverse=True):
        content = content.replace(entity, MASK)
    return content
