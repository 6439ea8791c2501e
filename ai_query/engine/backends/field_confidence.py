"""How sure the model was of each field of a structured answer, from its tokens' probabilities.

A field's confidence is the model's probability of the field's whole value as written: the
product of the probabilities of the generated tokens that make up the value's JSON text (for a
string, its quotes too: the closing quote is the model's word that the value ends there). A
token that straddles the key and the value counts for the value. Guided decoding gives these
probabilities over the tokens the schema allows at each step, so a field the schema fixes
counts as certain; what is left is the model's own doubt about the words. ``ai_extract``'s
``enableConfidenceScores`` reads them (see :mod:`ai_query.sql.task_functions`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"


def field_confidences(
    text: str, fields: Sequence[str], tokens: Sequence[tuple[str, float]] | None
) -> dict[str, float | None]:
    """Each of ``fields``' probability in the JSON object ``text`` (None: not in the answer, or
    no token probabilities, or tokens that do not spell ``text``; tokens after it, such as the
    end of turn, are left out)."""
    spans = value_spans(text)
    if tokens is None or not "".join(piece for piece, _ in tokens).startswith(text):
        return dict.fromkeys(fields)
    out: dict[str, float | None] = {}
    for name in fields:
        span = spans.get(name)
        if span is None:
            out[name] = None
            continue
        start, end = span
        total, at = 0.0, 0
        for piece, logprob in tokens:
            if at < end and at + len(piece) > start:
                total += logprob
            at += len(piece)
        out[name] = math.exp(total)
    return out


def value_spans(text: str) -> dict[str, tuple[int, int]]:
    """The [start, end) character span of each top-level value of the JSON object ``text``
    (empty where ``text`` is not one)."""
    spans: dict[str, tuple[int, int]] = {}
    at = _skip(text, 0)
    if not text.startswith("{", at):
        return {}
    at = _skip(text, at + 1)
    try:
        while at < len(text) and text[at] != "}":
            key, at = _DECODER.raw_decode(text, at)
            at = _skip(text, at)
            if not text.startswith(":", at):
                return spans
            start = _skip(text, at + 1)
            _, end = _DECODER.raw_decode(text, start)
            spans[str(key)] = (start, end)
            at = _skip(text, end)
            if text.startswith(",", at):
                at = _skip(text, at + 1)
    except ValueError:
        return spans
    return spans


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at
