"""Shared bits of the benchmarks: prompts, the offline vLLM baseline, timing."""

from __future__ import annotations

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


def add_model_args(parser: Any) -> None:
    """``--model DIR``: run the chat side of a benchmark on any local Hugging Face model."""
    parser.add_argument(
        "--model", default=None,
        help="a local chat model directory (default: the bundled SmolLM2-135M-Instruct)",
    )


def chat_endpoint(model: str | None) -> str:
    """The endpoint name the benchmark's SQL uses for the chat model."""
    return "smollm2-135m-instruct" if model is None else Path(model).name


def model_catalog(model: str | None) -> Any:
    """The catalog ai_query runs with: the bundled one, or ``model`` as its chat endpoint."""
    from ai_query.catalog import Catalog

    if model is None:
        return Catalog.default()
    entity = {"entity_name": str(Path(model).resolve()), "task": "llm/v1/chat"}
    endpoint = {"name": chat_endpoint(model), "config": {"served_entities": [entity]}}
    return Catalog.from_data({"endpoints": [endpoint]})


def offline_llm(kind: str, model: str | None = None) -> Any:
    """vLLM's offline ``LLM`` for a bundled model (or ``model``), with the same settings as our
    engine."""
    from ai_query.config import apply_vllm_environment

    apply_vllm_environment()
    from vllm import LLM

    from ai_query.engine.bundled import minilm_dir, smollm2_dir
    from ai_query.engine.vllm_backend import DEFAULT_ENGINE_ARGS

    if kind == "chat":
        args = {
            k: v
            for k, v in DEFAULT_ENGINE_ARGS["generate"].items()
            if k != "structured_outputs_config"
        }
        path = smollm2_dir() if model is None else Path(model)
        return LLM(model=str(path), distributed_executor_backend="uni", **args)
    return LLM(
        model=model or str(minilm_dir()),
        distributed_executor_backend="uni",
        **DEFAULT_ENGINE_ARGS["pooling"],
    )


def offline_chat(llm: Any, prompts: list[str], max_tokens: int) -> int:
    """Generate with ``LLM.chat``; returns output tokens."""
    from vllm import SamplingParams

    outs = llm.chat(
        [[{"role": "user", "content": p}] for p in prompts],
        SamplingParams(max_tokens=max_tokens, temperature=0.0),
        use_tqdm=False,
    )
    return sum(len(o.outputs[0].token_ids) for o in outs)


def report(name: str, ours: float, baseline: float, unit: str, goal: float) -> None:
    """Print both figures and the ratio (last line: the ratio)."""
    print(f"{name}: baseline {baseline:,.1f} {unit}, ai_query {ours:,.1f} {unit}")
    print(f"{name} ratio ai_query/baseline = {ours / baseline:.3f} (goal >= {goal})")
