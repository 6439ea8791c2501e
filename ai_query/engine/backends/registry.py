"""Process-wide registries: one backend per model, one engine per engine spec.

Backends (and so vLLM engines) are shared by every caller in the process: two DuckDB
connections, a Flight server and an HTTP server all reach the same ``AsyncLLM`` for a model.
Keys are the full identity of what is cached (the served entity's JSON, the engine spec), never
a name alone.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ai_query.catalog import ServedEntity
from ai_query.engine.core.loop import shared_loop
from ai_query.engine.vllm.compat import run_before_engine_exit_hooks
from ai_query.tasks import Task

if TYPE_CHECKING:
    from ai_query.engine.backends.backend import Backend

log = logging.getLogger(__name__)

BackendFactory = Callable[[ServedEntity], "Backend"]

_backends: dict[str, Backend] = {}
_lock = threading.Lock()


def backend_key(entity: ServedEntity) -> str:
    """What identifies a model: the entity minus its route name."""
    return entity.model_copy(update={"name": None}).model_dump_json(exclude_none=True)


def default_backend_factory(entity: ServedEntity) -> Backend:
    """A vLLM backend for a local entity; an OpenAI-client backend for an external one."""
    if entity.external_model is not None:
        from ai_query.engine.backends.external import ExternalBackend

        return ExternalBackend(entity.external_model)
    from ai_query.engine.backends.bundled import resolve_model_dir
    from ai_query.engine.vllm.backend import VLLMBackend
    from ai_query.engine.vllm.pooling import VLLMEmbeddingBackend

    model_dir = resolve_model_dir(str(entity.entity_name))
    if entity.resolved_task == Task.EMBEDDINGS:
        return VLLMEmbeddingBackend(
            model_dir, engine_args=entity.engine_args, on_start=close_backends_first_at_exit
        )
    return VLLMBackend(
        model_dir, engine_args=entity.engine_args, on_start=close_backends_first_at_exit
    )


def _registry_key(entity: ServedEntity, factory: BackendFactory | None) -> str:
    make = factory or default_backend_factory
    return f"{getattr(make, '__qualname__', repr(make))}:{backend_key(entity)}"


def existing_backend(entity: ServedEntity, factory: BackendFactory | None = None) -> Backend | None:
    """The process's backend for ``entity`` if one was made; never makes one."""
    with _lock:
        return _backends.get(_registry_key(entity, factory))


def shared_backend(entity: ServedEntity, factory: BackendFactory | None = None) -> Backend:
    """The process's backend for ``entity``, created on first use by ``factory``."""
    make = factory or default_backend_factory
    key = _registry_key(entity, factory)
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = make(entity)
            _backends[key] = backend
            close_backends_first_at_exit()
        return backend


#: How long :func:`close_backends` waits for one backend to close.
CLOSE_TIMEOUT_S = 120.0


def close_backends_first_at_exit() -> None:
    """(Re-)register :func:`close_backends` so it runs at exit before every exit hook registered
    so far: before vLLM's, which stop its engine processes (a backend calls this again after
    starting its engine, see :func:`~ai_query.engine.vllm.compat.run_before_engine_exit_hooks`),
    and before the engine loop's own stop (the loop is started first), so the backends' orderly
    shutdown runs on a live loop while the engine processes are still alive."""
    shared_loop()
    run_before_engine_exit_hooks(close_backends)


def close_backends() -> None:
    """Shut down every backend of the process (also run at exit), waiting at most
    :data:`CLOSE_TIMEOUT_S` seconds for each."""
    with _lock:
        backends = list(_backends.values())
        _backends.clear()
    if not backends:
        return
    loop = shared_loop()
    for backend in backends:
        try:
            loop.run(backend.close(), timeout=CLOSE_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            log.warning("a backend did not close within %g s: %r", CLOSE_TIMEOUT_S, backend)
        except Exception as exc:  # noqa: BLE001 - best effort at shutdown
            log.debug("closing %r: %s", backend, exc)
