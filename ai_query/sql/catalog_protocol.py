"""The one thing the SQL layer needs from an endpoint catalog: an endpoint's task."""

from __future__ import annotations

from typing import Protocol


class EndpointCatalog(Protocol):
    """Looks up serving endpoints by name (implemented by ``ai_query.catalog``)."""

    def task_of(self, name: str) -> str:
        """Return the endpoint's task, e.g. ``"llm/v1/chat"`` or ``"llm/v1/embeddings"``.

        Raises:
            UnknownEndpointError: when no endpoint has that name.
        """
        ...
