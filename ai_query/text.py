"""Messages on one line: how every surface (CLI, job logs, Flight, SQL editor) shows an error."""

from __future__ import annotations


def one_line(message: BaseException | str, limit: int | None = None) -> str:
    """``message`` (an exception's text, or text) on one line, its whitespace runs collapsed.

    An exception with no text gives its type's name. With ``limit``, a longer result is cut
    to ``limit`` characters, the last three being ``...``.
    """
    text = " ".join(str(message).split())
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
