"""Getting vLLM ready in this process: its import, early, and one engine build at a time.

``import vllm`` (torch, transformers and vLLM's engine modules) takes seconds, about 11 s on a
2-core CPU. An engine server would pay them only when a row first asks for a model; it starts
the import in a background thread at its first moment instead
(:func:`import_vllm_in_background`, called by ``ai-query serve``), so the import runs while the
server binds Arrow Flight and waits for its caller's first batch. On vLLM's CPU build the first
engine process imports vLLM at the same moment, in a zygote (:mod:`.zygote`).

Every vLLM engine build in this process goes through :func:`building`: it applies vLLM's
environment, starts the reaper (vLLM's engine processes must not outlive this one, even on
SIGKILL), waits for a background import under way, and holds one lock for the build. Builds
run off the engine loop (the loop keeps serving) but one at a time: vLLM keeps process-wide
state while it makes an engine's config and spawns its engine process, and two ``AsyncLLM``
builds at once in one process were seen to hang.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ai_query.config import apply_vllm_environment
from ai_query.engine.process.lifeline import start_reaper
from ai_query.engine.vllm.compat import forget_import_tracebacks
from ai_query.engine.vllm.zygote import discard as discard_zygote
from ai_query.engine.vllm.zygote import install as install_zygote
from ai_query.engine.vllm.zygote import note_imports_done, start_zygote
from ai_query.timings import mark

log = logging.getLogger(__name__)

_import_thread: threading.Thread | None = None
_import_lock = threading.Lock()
_build_lock = threading.Lock()


def import_vllm_in_background() -> None:
    """Start importing vLLM's engine modules in a daemon thread (once per process)."""
    global _import_thread
    apply_vllm_environment()  # vLLM reads its environment when it is imported
    with _import_lock:
        if _import_thread is None:
            _import_thread = threading.Thread(target=_import, name="aiq-import-vllm", daemon=True)
            _import_thread.start()


def wait_for_background_import() -> None:
    """Wait until a background import of vLLM (:func:`import_vllm_in_background`) is done:
    importing torch or transformers from another thread meanwhile can meet their modules half
    initialised (Python's import locks then give an ImportError)."""
    thread = _import_thread
    if thread is not None and thread is not threading.current_thread():
        thread.join()


@contextmanager
def building(model: str) -> Iterator[None]:
    """Hold this process's vLLM build slot while building ``model``'s engine.

    A failed background import is not raised here: the build's own import raises it.
    """
    apply_vllm_environment()
    start_reaper()
    wait_for_background_import()
    with _build_lock:
        mark("engine: build start", model=model)
        try:
            yield
        finally:
            # A build may be the first import of vLLM: the engine must not outlive its shutdown.
            forget_import_tracebacks()
        mark("engine: ready", model=model)


def _import() -> None:
    try:
        start_zygote()  # the first engine process imports vLLM at the same time
    except OSError as exc:
        log.warning("no zygote for the first engine process: %s", exc)
    mark("server: vllm import start")
    try:
        # What building an engine imports first; the engine process imports the rest.
        import vllm
        import vllm.engine.arg_utils
        import vllm.v1.engine.async_llm  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - the build imports again and reports it
        log.warning("importing vLLM in the background failed: %s", exc)
        discard_zygote()  # it cannot import vLLM either: no interpreter idles for nothing
        return
    forget_import_tracebacks()
    note_imports_done()
    install_zygote()  # says why when it cannot be used (a vLLM internal that moved)
    mark("server: vllm imported")
