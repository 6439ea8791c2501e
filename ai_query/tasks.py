"""The endpoint tasks, in Databricks' spelling: the one vocabulary every layer uses.

A :class:`Task` is a :class:`~enum.StrEnum`, so it compares equal to its string and is written
as that string in JSON, catalogs and logs (``Task.CHAT == "llm/v1/chat"``).
"""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    """What an endpoint serves (Databricks' ``task`` of a serving endpoint)."""

    CHAT = "llm/v1/chat"
    """Chat: the text is one user message (``/chat/completions``)."""
    COMPLETIONS = "llm/v1/completions"
    """Completions: the text is the raw prompt (``/completions``)."""
    EMBEDDINGS = "llm/v1/embeddings"
    """Embeddings: one vector per text (``/embeddings``)."""


#: Every task, in declaration order (for messages that list them).
TASKS: tuple[Task, ...] = tuple(Task)
