"""Everything ``ai-query serve`` takes, as one frozen value (built by the CLI or a test): the
Flight server, the HTTP app (:func:`ai_query.serving.http.app.create_app`) and the engine they
share all read this one object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ai_query.engine.kinds import SERVER_ENGINE_KINDS, EngineKind

#: Flight port unless told otherwise.
DEFAULT_FLIGHT_PORT = 8815
#: HTTP port unless told otherwise (``--no-http`` turns HTTP off).
DEFAULT_HTTP_PORT = 8000


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """How one server process runs: Flight always, HTTP unless turned off."""

    catalog: Path | None = None
    """Endpoint catalog file; None: the bundled endpoints."""
    host: str = "127.0.0.1"
    """Address both servers bind."""
    port: int = DEFAULT_FLIGHT_PORT
    """Arrow Flight port (0: any free port, logged)."""
    http_port: int | None = DEFAULT_HTTP_PORT
    """HTTP port; None: no HTTP server."""
    token: str | None = None
    """A bearer token for an administrator (from ``AI_QUERY_SERVER_TOKEN``)."""
    tokens_file: Path | None = None
    """Bearer tokens file (see :mod:`ai_query.serving.auth`)."""
    allow_external_bases: tuple[str, ...] = ()
    """API bases external models may use besides those of the catalog file's endpoints
    (``--allow-external-base``; administrators may use any, see
    :mod:`ai_query.serving.permissions`)."""
    allow_image_bases: tuple[str, ...] = ()
    """URL prefixes chat requests' ``image_url`` parts may point at (``--allow-image-base``);
    every other image must come as a data URL
    (:func:`ai_query.engine.core.files.check_image_parts`)."""

    def image_url_allowed(self, url: str) -> bool:
        """Whether an ``image_url`` part may name ``url`` (under an allowed prefix)."""
        return any(url == base or url.startswith(base.rstrip("/") + "/")
                   for base in self.allow_image_bases)
    database: Path | None = None
    """SQLite file of endpoints made over HTTP; None: ``<cache>/serving/endpoints.sqlite`` for
    ``ai-query serve``, in memory for an app made by ``create_app`` alone (tests)."""
    inference_table: Path | None = None
    """Directory of the inference table (Parquet); None: off."""
    preload: bool | tuple[str, ...] = True
    """Start models before listening: every local endpoint (True), none (False), or these."""
    warm: bool | tuple[str, ...] = False
    """Start models in the background once listening (rows that come first wait for the same
    start): every local endpoint (True), none (False), or these."""
    engine: EngineKind = EngineKind.VLLM
    """What runs the local models, in this process: vLLM, or the deterministic backend (no
    model; external models are still called for real)."""
    engine_factory: str | None = None
    """``module:callable`` that builds the engine Flight serves from the catalog instead (bring
    your own Engine; see :func:`ai_query.engine.spec.load_engine_factory`); endpoints made over
    HTTP still run on :attr:`engine`."""
    default_max_tokens: int = 1024
    """max_tokens of an HTTP chat or completion request that sets none."""
    rate_limit_period_scale: float = 1.0
    """Multiplies every rate-limit period (tests shorten the minute; keep 1.0 in service)."""
    inference_flush_seconds: float = 1.0
    """How often queued inference-table rows are written."""
    inference_queue_size: int = 10_000
    """Inference-table rows that may wait; beyond it rows are dropped (and counted)."""
    log_level: str = "info"
    """Level of the server's own (JSON) logs."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest HTTP request body in bytes (larger: 413)."""
    insecure: bool = False
    """Allow binding a non-loopback address with auth off (no tokens)."""
    lifeline_fd: int | None = None
    """This server's end of a socket pair held by the process that started it: when that end
    closes, that process died and the server exits; once listening, the server reports its ports
    on it (see :mod:`ai_query.engine.process.lifeline`)."""
    private_dir: Path | None = None
    """A directory the launcher made for this server (catalog, log): removed when the server
    exits because its parent died (the parent removes it otherwise)."""

    def __post_init__(self) -> None:
        # Callers may pass the kind as text (``deterministic``, or ``local`` for vLLM).
        object.__setattr__(
            self, "engine", EngineKind.parse(self.engine, allowed=SERVER_ENGINE_KINDS)
        )

    @property
    def runs_vllm(self) -> bool:
        """Whether this server's own engine runs models on vLLM (not a factory's engine)."""
        return self.engine == EngineKind.VLLM and self.engine_factory is None
