"""Prometheus metrics of the HTTP server, in a registry of its own (one per app)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ai_query.engine.process.supervision import EngineHealth

#: Latency buckets in seconds: tiny models answer in milliseconds, big ones in minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServerMetrics:
    """Requests, latency, tokens and queue depth per endpoint."""

    content_type = CONTENT_TYPE_LATEST
    """Content type of :meth:`render`'s output."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        """The registry that ``/metrics`` exposes."""
        self.requests = Counter(
            "ai_query_requests",
            "Inference requests answered, by endpoint, API route and HTTP status.",
            ["endpoint", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ai_query_request_duration_seconds",
            "Time from receiving an inference request to its last byte, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "ai_query_tokens",
            "Tokens read (prompt) and generated (completion), by endpoint.",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "ai_query_queue_depth",
            "Inference requests waiting for or running on a model, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "ai_query_rate_limited",
            "Requests refused with 429 by an endpoint's rate limits.",
            ["endpoint"],
            registry=self.registry,
        )
        self.table_queue = Gauge(
            "ai_query_inference_table_queue_depth",
            "Inference-table rows waiting to be written.",
            registry=self.registry,
        )
        self.table_dropped = Counter(
            "ai_query_inference_table_dropped",
            "Inference-table rows dropped because the queue was full.",
            registry=self.registry,
        )
        # Set from the supervisors' own counts at scrape time, hence gauges.
        self.engine_restarts = Gauge(
            "ai_query_engine_restarts_total",
            "Times an endpoint's engine was restarted after its process died.",
            ["endpoint"],
            registry=self.registry,
        )
        self.engine_ready = Gauge(
            "ai_query_engine_ready",
            "1 while an endpoint's engines answer requests, 0 while dead or restarting.",
            ["endpoint"],
            registry=self.registry,
        )
        self.table_written = Counter(
            "ai_query_inference_table_rows",
            "Inference-table rows written.",
            registry=self.registry,
        )

    def engine_state(self, endpoint: str, health: EngineHealth) -> None:
        """Record an endpoint's engine restarts and readiness (at scrape time)."""
        self.engine_restarts.labels(endpoint).set(health.restarts)
        self.engine_ready.labels(endpoint).set(1 if health.state.ready else 0)

    def observe(self, endpoint: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(endpoint, route, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def count_tokens(self, endpoint: str, prompt: int, completion: int) -> None:
        """Add a request's token counts."""
        if prompt:
            self.tokens.labels(endpoint, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(endpoint, "completion").inc(completion)

    def summary(self, endpoint: str) -> dict[str, Any]:
        """One endpoint's running totals, as JSON for the web UI's charts.

        Totals only (requests by status, tokens, latency buckets): the page keeps the samples
        it polls and charts their differences, so the server holds no history.
        """
        requests: dict[str, float] = {}
        tokens = {"prompt": 0.0, "completion": 0.0}
        buckets: list[list[float]] = []
        latency_count = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.labels.get("endpoint") != endpoint:
                    continue
                if sample.name == "ai_query_requests_total":
                    status = sample.labels["status"]
                    requests[status] = requests.get(status, 0.0) + sample.value
                elif sample.name == "ai_query_tokens_total":
                    tokens[sample.labels["kind"]] += sample.value
                elif sample.name == "ai_query_request_duration_seconds_bucket":
                    if sample.labels["le"] == "+Inf":  # JSON has no infinity; ``count`` is it
                        continue
                    buckets.append([float(sample.labels["le"]), sample.value])
                elif sample.name == "ai_query_request_duration_seconds_count":
                    latency_count = sample.value
        return {
            "endpoint": endpoint,
            "time": time.time(),
            "requests": requests,
            "tokens": tokens,
            "latency": {"buckets": sorted(buckets), "count": latency_count},
        }

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
