"""Shared bits of the benchmarks: prompts, the offline vLLM baseline, timing."""

from __future__ import annotations

import time
from collections.abc import Callable
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


def offline_llm(kind: str, model: str | None = None) -> Any:
    """vLLM's offline ``LLM`` for a bundled model (or the local model directory ``model``), with
    the same settings as our engine."""
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
        return LLM(model=model or str(smollm2_dir()), distributed_executor_backend="uni", **args)
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
