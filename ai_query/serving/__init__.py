"""The engine server: one process hosting the catalog's engines for other processes.

- :mod:`~ai_query.serving.flight`: Arrow Flight (``DoExchange`` of Arrow batches), for
  Spark executors and other SQL engines; its client is
  :class:`ai_query.engine.flight.client.FlightEngineClient`.
- :mod:`~ai_query.serving.http`: the HTTP API (OpenAI-compatible and Databricks routes).
- :mod:`~ai_query.serving.state`: what the server serves and the management API's operations,
  over :mod:`~ai_query.serving.registry` (endpoint records, the served catalog, permission
  lookups) and :mod:`~ai_query.serving.deployment` (backends, engine health, rollouts).
- :mod:`~ai_query.serving.serve`: ``ai-query serve``: build the engine, serve, stop
  gracefully on SIGTERM/SIGINT.
- :mod:`~ai_query.engine.process.launcher`: start and stop a server subprocess (embedded
  server for local Spark, tests, benchmarks).

Nothing is imported here, so importing a submodule stays cheap.
"""
