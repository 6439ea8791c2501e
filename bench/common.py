"""Shared bits of the benchmarks: prompts, the models (``--model``), the offline vLLM baseline,
timing."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

TOPICS = [
    "the sea",
    "a bicycle",
    "coffee",
    "winter",
    "a library",
    "robots",
    "bread",
    "music",
    "mountains",
    "a train",
    "gardens",
    "the moon",
    "rain",
    "a market",
    "chess",
    "bees",
]


def chat_prompts(n: int) -> list[str]:
    """``n`` distinct short chat prompts."""
    return [
        f"Write one sentence about {TOPICS[i % len(TOPICS)]} (variation {i})." for i in range(n)
    ]


def texts(n: int) -> list[str]:
    """``n`` distinct sentences to embed."""
    return [
        f"Document {i}: notes about {TOPICS[i % len(TOPICS)]} and {TOPICS[(i * 7) % len(TOPICS)]}."
        for i in range(n)
    ]


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` once; its result and wall seconds."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


CHAT_ENDPOINT = "smollm2-135m-instruct"
EMBED_ENDPOINT = "all-minilm-l6-v2"


def query_rows(con: Any, endpoint: str, rows: list[str], params: str = "") -> tuple[float, list[Any]]:
    """(seconds, answers in row order) of ``SELECT id, ai_query(endpoint, p{params}) FROM t``.

    ``rows`` become table ``t`` (``id``, ``p``) of the ai_query connection ``con``, in id order;
    a lost or null row stops the benchmark rather than counting as speed.
    """
    import pyarrow as pa

    con.raw.register("src", pa.table({"id": range(len(rows)), "p": rows}))
    con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM src ORDER BY id")
    sql = f"SELECT id, ai_query('{endpoint}', p{params}) AS r FROM t"
    table, seconds = timed(lambda: con.sql(sql).to_arrow_table())
    if table.num_rows != len(rows) or table.column("r").null_count:
        raise SystemExit("the DuckDB query lost rows")
    return seconds, table.sort_by("id").column("r").to_pylist()


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--model DIR`` and ``--embed-model DIR``: the models both sides of a benchmark run.

    Any local Hugging Face model directory vLLM can load; default: the bundled
    SmolLM2-135M-Instruct (chat) and all-MiniLM-L6-v2 (embeddings). ai_query's side serves them
    under the bundled endpoint names, so a benchmark's SQL does not change.
    """
    parser.add_argument(
        "--model", type=Path, metavar="DIR",
        help="local HF chat model directory for both sides (default: bundled SmolLM2-135M)",
    )
    parser.add_argument(
        "--embed-model", type=Path, metavar="DIR",
        help="local HF embedding model directory for both sides (default: bundled MiniLM-L6)",
    )


def chat_model_dir(args: argparse.Namespace) -> Path:
    """The chat model's directory: ``--model``, else the bundled SmolLM2 (converted once)."""
    if args.model is not None:
        return _model_dir(args.model)
    from ai_query.engine.backends.bundled import smollm2_dir

    return smollm2_dir()


def embed_model_dir(args: argparse.Namespace) -> Path:
    """The embedding model's directory: ``--embed-model``, else the bundled MiniLM."""
    if args.embed_model is not None:
        return _model_dir(args.embed_model)
    from ai_query.engine.backends.bundled import minilm_dir

    return minilm_dir()


def _model_dir(path: Path) -> Path:
    path = path.expanduser().resolve()
    if not (path / "config.json").is_file():
        raise SystemExit(f"{path} is not a Hugging Face model directory (no config.json)")
    return path


def bench_catalog(args: argparse.Namespace, *, embeddings: bool = True) -> Any:
    """The catalog of ai_query's side: the bundled endpoint names and their Databricks aliases
    (so a benchmark's SQL does not change), served by ``--model`` / ``--embed-model`` when
    given, else by the bundled models; without the embeddings endpoint unless ``embeddings``.
    Without flags and with ``embeddings`` it is the default catalog."""
    from ai_query.catalog import DATABRICKS_ALIASES, Catalog, local_endpoint

    chat = CHAT_ENDPOINT if args.model is None else str(_model_dir(args.model))
    endpoints = [local_endpoint(CHAT_ENDPOINT, chat, "llm/v1/chat")]
    if embeddings:
        embed = EMBED_ENDPOINT if args.embed_model is None else str(_model_dir(args.embed_model))
        endpoints.append(local_endpoint(EMBED_ENDPOINT, embed, "llm/v1/embeddings"))
    names = {e.name for e in endpoints}
    return Catalog(endpoints, {a: t for a, t in DATABRICKS_ALIASES.items() if t in names})


def write_catalog(catalog: Any, path: Path) -> Path:
    """Write ``catalog`` as a JSON catalog file (for ``ai-query ... --catalog``); returns path."""
    path.write_text(json.dumps(catalog.to_data()))
    return path


def engine_settings(kind: str) -> tuple[dict[str, str], dict[str, Any]]:
    """(environment, ``LLM`` keyword arguments) our engine server gives vLLM for ``kind``
    (``chat`` or ``embed``): what a fair baseline runs with."""
    from ai_query.config import effective_vllm_environment
    from ai_query.engine.vllm.model import engine_defaults

    return effective_vllm_environment(), engine_defaults(
        "generate" if kind == "chat" else "pooling"
    )


def offline_llm(kind: str, model: str | Path | None = None, **overrides: Any) -> Any:
    """vLLM's offline ``LLM`` with the same settings as our engine, for the bundled model of
    ``kind`` (``chat`` or ``embed``) or the model directory ``model``; ``overrides`` replace
    engine arguments (a ``None`` value drops one, leaving vLLM's own default). ai_query's own
    KV connector (shared tails) is not a vLLM setting: the baseline runs without it unless
    ``overrides`` give ``kv_transfer_config``."""
    from ai_query.config import apply_vllm_environment

    apply_vllm_environment()
    from vllm import LLM

    from ai_query.engine.backends.bundled import minilm_dir, smollm2_dir
    from ai_query.engine.vllm.model import engine_defaults

    if kind == "chat":
        args = engine_defaults("generate")
        args.pop("structured_outputs_config")
        args.pop("kv_transfer_config", None)  # ai_query's shared tails: not plain vLLM's
        model = model or smollm2_dir()
    else:
        args = engine_defaults("pooling")
        model = model or minilm_dir()
    args.update(overrides)
    args = {k: v for k, v in args.items() if v is not None}
    return LLM(model=str(model), distributed_executor_backend="uni", **args)


#: vLLM offline as a user first writes it: ``LLM(model, dtype="bfloat16")`` (compiled mode,
#: vLLM's own KV block size and scheduler limits).
DEFAULT_BASELINE: dict[str, Any] = {"dtype": "bfloat16"}


class OfflineBaseline:
    """vLLM's offline ``LLM`` in a process of its own, answering batches of chat prompts: a
    benchmark's baseline, so that it and ai_query's engine server each run in their own process
    and a run can hold several baselines at once. ``args`` None: ai_query's own settings."""

    def __init__(
        self, model: str | Path, args: dict[str, Any] | None, preload: str | None = None
    ) -> None:
        import multiprocessing
        import os

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_baseline_worker, args=(child, str(model), args))
        before = os.environ.get("LD_PRELOAD")
        os.environ["LD_PRELOAD"] = preload or ""  # vLLM as users run it: what they preload
        try:
            self._proc.start()
        finally:
            os.environ.pop("LD_PRELOAD")
            if before is not None:
                os.environ["LD_PRELOAD"] = before
        self.settings: str = self._conn.recv()
        """What the engine runs with (block size, scheduler limits, eager or compiled)."""

    def chat(
        self, prompts: list[str], max_tokens: int, images: list[bytes] | None = None
    ) -> tuple[float, list[str]]:
        """(seconds, answers) of one ``LLM.chat`` over ``prompts`` (temperature 0), each with
        its image from ``images`` where given."""
        self._conn.send((prompts, max_tokens, images))
        result: tuple[float, list[str]] = self._conn.recv()
        return result

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(60)


def _baseline_worker(conn: Any, model: str, args: dict[str, Any] | None) -> None:
    from ai_query.config import apply_vllm_environment

    apply_vllm_environment()
    from vllm import LLM

    llm = (
        offline_llm("chat", model) if args is None
        else LLM(model=model, distributed_executor_backend="uni", **args)
    )  # fmt: skip
    config = llm.llm_engine.vllm_config
    conn.send(
        f"dtype {config.model_config.dtype}, block_size {config.cache_config.block_size}, "
        f"max_num_seqs {config.scheduler_config.max_num_seqs}, max_num_batched_tokens "
        f"{config.scheduler_config.max_num_batched_tokens}, enforce_eager "
        f"{config.model_config.enforce_eager}, malloc {process_malloc()}"
    )
    offline_chat(llm, ["warm up"], 8)
    while (job := conn.recv()) is not None:
        prompts, max_tokens, images = job
        outs, seconds = timed(
            lambda p=prompts, m=max_tokens, i=images: chat_outputs(llm, p, m, i)
        )
        conn.send((seconds, [o.outputs[0].text for o in outs]))


def process_malloc(pid: int | str = "self") -> str:
    """The allocator process ``pid`` runs on: ``tcmalloc`` where it is loaded, else ``glibc``."""
    return "tcmalloc" if "libtcmalloc" in Path(f"/proc/{pid}/maps").read_text() else "glibc"


def chat_outputs(
    llm: Any, prompts: list[str], max_tokens: int, images: list[bytes] | None = None
) -> list[Any]:
    """``LLM.chat`` over ``prompts``, one user message each (with its image from ``images``, as
    an ``image_url`` data URL part, where given), temperature 0: its outputs."""
    from vllm import SamplingParams

    from ai_query.engine.core.files import image_part

    def content(i: int) -> Any:
        if images is None:
            return prompts[i]
        return [{"type": "text", "text": prompts[i]}, image_part(images[i])]

    return list(llm.chat(
        [[{"role": "user", "content": content(i)}] for i in range(len(prompts))],
        SamplingParams(max_tokens=max_tokens, temperature=0.0),
        use_tqdm=False,
    ))  # fmt: skip


def offline_chat(llm: Any, prompts: list[str], max_tokens: int) -> int:
    """Generate with ``LLM.chat``; returns output tokens."""
    return sum(len(o.outputs[0].token_ids) for o in chat_outputs(llm, prompts, max_tokens))


def report(name: str, ours: float, baseline: float, unit: str, goal: float) -> None:
    """Print both figures and the ratio (last line: the ratio)."""
    print(f"{name}: baseline {baseline:,.1f} {unit}, ai_query {ours:,.1f} {unit}")
    print(f"{name} ratio ai_query/baseline = {ours / baseline:.3f} (goal >= {goal})")


def cpu_line() -> str:
    """The machine (CPU, the flags that decide vLLM's CPU kernels, cores, memory, GPU) and the
    chat engine's settings chosen from it: printed beside every figure."""
    from ai_query.engine.vllm.model import engine_defaults
    from ai_query.machine import this_machine

    args = engine_defaults("generate")
    chosen = ", ".join(
        f"{k} {args[k]}"
        for k in ("dtype", "block_size", "max_num_seqs", "max_num_batched_tokens", "enforce_eager")
        if k in args
    )
    tails = "on" if args.get("kv_transfer_config") else "off"
    return f"machine: {this_machine().describe()}; chat engine: {chosen}, shared tails {tails}"
