"""Where rows behind a shared instruction spend their time: vLLM offline, ai_query's settings.

``--rows`` rows behind one ~1,300-token instruction (``shared_prefix.instruction``) against the
same rows without it, ``LLM.chat`` with prefix caching (max_tokens 8, temperature 0). Printed:

- seconds per case (the instruction cold, then warm: its KV blocks cached), with vLLM's own
  counters: prompt tokens, the share the prefix cache answered, and the tokens computed
  (prompt less cached) per row;
- a profile of the warm case and of the rows alone (``torch.profiler``): self time of the CPU
  attention kernel, of the linear layers (oneDNN matrix products) and of the rest;
- the attention's arithmetic rate: FLOPs of every query token (computed prompt tokens and
  decoded tokens) against its context, 4 per head dimension (QK and PV), per second of the
  attention kernel, beside a large matrix product's rate in the same dtype (the CPU's
  practical peak);
- the rate of the shared prefix's attention for a batch of queries at once, written in PyTorch
  ops (Hydragen's prefix half, as cascade attention does on GPUs): what computing the prefix
  once for the batch gets without a new C++ kernel.

    .venv/bin/python bench/prefix_profile.py [--rows 256] [--shared-tails] [--model DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import add_model_args, chat_model_dir, cpu_line, offline_chat, offline_llm, timed
from shared_prefix import instruction

MAX_TOKENS = 8
COUNTERS = ("prompt_tokens", "prefix_cache_queries", "prefix_cache_hits", "generation_tokens",
            "external_prefix_cache_hits")
#: Profiled operators by part (their self time).
PARTS = {"attention": ("cpu_attention",), "linear": ("onednn_mm", "aten::mm", "aten::addmm")}


def counters(llm: Any) -> dict[str, float]:
    """vLLM's counters now (``disable_log_stats=False``)."""
    found = {m.name.split(":", 1)[1]: getattr(m, "value", 0) for m in llm.get_metrics()}
    return {k: float(found.get(k, 0)) for k in COUNTERS}


def profile(run: Any) -> dict[str, float]:
    """Self CPU seconds of ``run()`` by part (:data:`PARTS`, the rest as ``other``)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    parts = dict.fromkeys([*PARTS, "other"], 0.0)
    for event in prof.key_averages():
        part = next((p for p, names in PARTS.items() if any(n in event.key for n in names)), "other")
        parts[part] += event.self_cpu_time_total / 1e6
    return parts


def gemm_rate(dtype_name: str) -> float:
    """GFLOP/s of a large matrix product in the engine's dtype on this CPU (what a batched
    prefix attention could reach at best)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(2048, 2048).to(dtype), torch.randn(2048, 2048).to(dtype)
    torch.matmul(a, b)
    _, took = timed(lambda: [torch.matmul(a, b) for _ in range(8)])
    return 8 * 2 * 2048**3 / took / 1e9


def batched_prefix_rate(dtype_name: str, kv_heads: int, group: int, head_dim: int, prefix: int,
                        queries: int = 1024) -> float:
    """GFLOP/s of a shared prefix's attention for a whole batch of queries as PyTorch matrix
    products (Hydragen's prefix half: scores, an fp32 softmax keeping its log-sum-exp for the
    merge, values), the way it could be written without a new C++ kernel."""
    import torch

    dtype = getattr(torch, dtype_name)
    q = torch.randn(kv_heads, queries * group, head_dim).to(dtype)
    k, v = (torch.randn(kv_heads, prefix, head_dim).to(dtype) for _ in range(2))

    def attend() -> None:
        scores = torch.bmm(q, k.transpose(1, 2)).float() * head_dim**-0.5
        top = scores.amax(-1, keepdim=True)
        weights = torch.exp(scores - top)
        total = weights.sum(-1, keepdim=True)
        torch.bmm((weights / total).to(dtype), v)
        _ = top + total.log()

    attend()
    _, took = timed(lambda: [attend() for _ in range(4)])
    return 4 * queries * group * kv_heads * prefix * head_dim * 4 / took / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--shared-tails", action="store_true",
                        help="with ai_query's KV connector (the rows share the instruction's "
                        "last, partial block), as ai_query's engine runs")
    add_model_args(parser)
    args = parser.parse_args()
    from ai_query.engine.vllm.compat.shared_tails import SHARED_TAILS

    tails = {"kv_transfer_config": dict(SHARED_TAILS)} if args.shared_tails else {}
    llm = offline_llm("chat", chat_model_dir(args), disable_log_stats=False, **tails)
    config = llm.llm_engine.vllm_config.model_config.hf_config
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    layers = config.num_hidden_layers
    offline_chat(llm, ["warm up"], MAX_TOKENS)
    shared = len(llm.get_tokenizer()(instruction(0))["input_ids"])
    print(cpu_line())
    print(f"{args.rows} rows, instruction {shared} tokens, {MAX_TOKENS} output tokens each; "
          f"shared tails {'on' if tails else 'off'}")

    def rows(k: int, trial: int, behind: bool = True) -> list[str]:
        head = f"{instruction(k)}\n\n" if behind else "Write one sentence about: "
        return [f"{head}Text {i} (trial {trial}): a short note." for i in range(args.rows)]

    seconds: dict[str, float] = {}
    computed: dict[str, float] = {}
    for name, prompts in [
        ("instruction cold", rows(1, 0)),
        ("instruction warm", rows(1, 1)),
        ("rows alone", rows(0, 2, behind=False)),
    ]:
        before = counters(llm)
        _, seconds[name] = timed(lambda p=prompts: offline_chat(llm, p, MAX_TOKENS))
        used = {k: v - before[k] for k, v in counters(llm).items()}
        shared_tail = used["external_prefix_cache_hits"]
        computed[name] = used["prompt_tokens"] - used["prefix_cache_hits"] - shared_tail
        print(
            f"{name}: {seconds[name]:.2f} s; prompt tokens {used['prompt_tokens']:,.0f}, "
            f"{used['prefix_cache_hits'] / max(used['prefix_cache_queries'], 1):.1%} from the "
            f"prefix cache, {shared_tail / args.rows:.1f} a row from shared tails, computed "
            f"{computed[name] / args.rows:.1f} per row"
        )
    print(f"rows behind the instruction (warm) / rows alone: "
          f"{seconds['instruction warm'] / seconds['rows alone']:.2f}x")
    for name, prompts, context in [
        ("instruction warm", rows(1, 3), shared + 40),
        ("rows alone", rows(0, 4, behind=False), 40),
    ]:
        parts = profile(lambda p=prompts: offline_chat(llm, p, MAX_TOKENS))
        total = sum(parts.values())
        shown = ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in parts.items())
        queries = computed[name] + args.rows * (MAX_TOKENS - 1)
        flops = queries * context * heads * head_dim * 4 * layers
        print(f"profile, {name}: {shown}; attention {flops / 1e9:,.0f} GFLOP at "
              f"{flops / 1e9 / max(parts['attention'], 1e-9):,.0f} GFLOP/s")
    dtype = str(llm.llm_engine.vllm_config.model_config.dtype).removeprefix("torch.")
    print(f"a 2048x2048 {dtype} matrix product on this CPU: {gemm_rate(dtype):,.0f} GFLOP/s")
    kv_heads = getattr(config, "num_key_value_heads", heads)
    rate = batched_prefix_rate(dtype, kv_heads, heads // kv_heads, head_dim, shared)
    print(f"the instruction's attention for 1,024 queries at once in PyTorch ops (Hydragen's "
          f"prefix half, no new kernel): {rate:,.0f} GFLOP/s")


if __name__ == "__main__":
    main()
