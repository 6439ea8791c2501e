"""Settings of the HTTP server (one frozen value, built by the CLI or a test)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class HTTPOptions:
    """How the HTTP server runs."""

    host: str = "127.0.0.1"
    """Address to bind (loopback by default; bind 0.0.0.0 only with auth on)."""
    port: int = 8000
    """TCP port."""
    database: Path | None = None
    """SQLite file holding endpoints created through the API; None keeps them in memory."""
    tokens_file: Path | None = None
    """Bearer tokens file (``{token: principal}``); None turns auth off."""
    allow_external_bases: tuple[str, ...] = ()
    """API bases external models may use besides those of the catalog's own endpoints."""
    inference_table: Path | None = None
    """Directory of the inference table (Parquet parts); None turns logging of payloads off."""
    engine: Literal["vllm", "deterministic"] = "vllm"
    """``vllm`` runs local entities on vLLM; ``deterministic`` on the test backend (external
    models are always forwarded for real)."""
    default_max_tokens: int = 1024
    """max_tokens of a chat or completion request that sets none."""
    rate_limit_period_scale: float = 1.0
    """Multiplies every rate-limit period (tests shorten the minute; keep 1.0 in service)."""
    inference_flush_seconds: float = 1.0
    """How often queued inference-table rows are written."""
    inference_queue_size: int = 10_000
    """Inference-table rows that may wait; beyond it rows are dropped (and counted)."""
    warmup: bool = False
    """Start every local model at start-up instead of on its first request."""
    log_level: str = "info"
    """Log level of the server's structured logs."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body in bytes; a larger one is answered 413."""
