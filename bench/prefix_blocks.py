"""Why ai_query runs generative models on 32-token KV blocks on a CPU: vLLM offline alone.

Rows behind one shared ~1,300-token instruction (``shared_prefix.instruction``) and short
unique prompts, through ``LLM.chat`` (prefix caching on) built with ``--block-size`` tokens per
KV block (vLLM's CPU default is 128; ai_query uses 32 there). Printed per case, in seconds:

- the instruction's first use (cold) and a second use (warm: only each row's tail computes);
- ``staged``: one row first, then all rows: whether computing the prefix ahead helps (vLLM 0.32
  already shares a prefix computed in the same step: it caches a block when it allocates it);
- short unique prompts, 1 and 8 output tokens.

Run it once per block size and compare (no ratio: each run is one engine):

    .venv/bin/python bench/prefix_blocks.py --block-size 128 [--rows 64] [--model DIR]
    .venv/bin/python bench/prefix_blocks.py --block-size 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (
    TOPICS,
    add_model_args,
    chat_model_dir,
    cpu_line,
    offline_chat,
    offline_llm,
    timed,
)
from shared_prefix import instruction


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--block-size", type=int, required=True)
    parser.add_argument("--rows", type=int, default=64)
    add_model_args(parser)
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    llm = offline_llm("chat", chat_model_dir(args), block_size=args.block_size)
    offline_chat(llm, ["warm up"], 8)
    shared = len(llm.get_tokenizer()(instruction(0))["input_ids"])
    print(f"block size {args.block_size}, instruction {shared} tokens, {args.rows} rows")

    def behind(k: int, trial: int) -> list[str]:
        return [
            f"{instruction(k)}\n\nText {i} (trial {trial}): a short note about "
            f"{TOPICS[i % len(TOPICS)]}." for i in range(args.rows)
        ]

    def unique(trial: int) -> list[str]:
        return [
            f"Write one sentence about: Text {i} (trial {trial}): a note about "
            f"{TOPICS[i % len(TOPICS)]}." for i in range(args.rows)
        ]

    def staged(prompts: list[str]) -> None:
        offline_chat(llm, prompts[:1], 1)
        offline_chat(llm, prompts, 8)

    cases = [
        ("one instruction, 1 token, cold", lambda: offline_chat(llm, behind(1, 0), 1)),
        ("one instruction, 1 token, warm", lambda: offline_chat(llm, behind(1, 1), 1)),
        ("one instruction, 8 tokens, cold", lambda: offline_chat(llm, behind(2, 2), 8)),
        ("one instruction, 8 tokens, staged", lambda: staged(behind(3, 3))),
        ("unique short, 8 tokens", lambda: offline_chat(llm, unique(4), 8)),
        ("unique short, 1 token", lambda: offline_chat(llm, unique(5), 1)),
    ]
    for label, run in cases:
        _, seconds = timed(run)
        print(f"block size {args.block_size}: {label}: {seconds:.2f} s", flush=True)


if __name__ == "__main__":
    main()
