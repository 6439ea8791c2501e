"""The one thing the SQL layer needs from an endpoint catalog: an endpoint's task."""

from __future__ import annotations

from typing import Protocol

from ai_query.tasks import Task


class EndpointCatalog(Protocol):
    """Looks up serving endpoints by name (implemented by ``ai_query.catalog``)."""

    def task_of(self, name: str) -> Task:
        """Return the endpoint's task, e.g. :attr:`Task.CHAT` or :attr:`Task.EMBEDDINGS`.

        Raises:
            UnknownEndpointError: when no endpoint has that name.
        """
        ...
