"""The HTTP half of the engine server: Model Serving for applications.

OpenAI-compatible ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/models``; Databricks ``/serving-endpoints/{name}/invocations`` and the
``/api/2.0/serving-endpoints`` management API; ``/health`` and Prometheus ``/metrics``.
Endpoints created over HTTP persist in a SQLite file and are served by the same process-wide
backends as the SQL path. See :func:`create_app` and :func:`start_http`; both read the
server's one options object, :class:`ai_query.serving.options.ServeOptions`.
"""

from __future__ import annotations

from ai_query.serving.http.app import HTTPServerThread, create_app, start_http

__all__ = ["HTTPServerThread", "create_app", "start_http"]
