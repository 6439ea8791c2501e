"""Embeddings through vLLM's ``LLM.embed`` (public; what ``ai_query.engine.vllm.pooling`` calls)
against ``LLM.encode(pooling_task="embed")`` (what it called before), on one offline engine with
ai_query's settings.

Both sides include turning vLLM's output into the float32 vectors ai_query returns
(``.outputs.embedding``, a list, for ``embed``; ``.outputs.data``, a tensor, for ``encode``).
Trials alternate between the two; printed: the CPU, each trial, the medians and the ratio
(last line). Run:

    .venv/bin/python bench/embed_api.py [--texts 4096] [--trials 5] [--embed-model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import add_model_args, cpu_line, embed_model_dir, offline_llm, texts, timed


def with_encode(llm: Any, batch: list[str]) -> list[np.ndarray]:
    outs = llm.encode(batch, pooling_task="embed", use_tqdm=False)
    return [np.asarray(o.outputs.data.float().numpy(), dtype=np.float32) for o in outs]


def with_embed(llm: Any, batch: list[str]) -> list[np.ndarray]:
    outs = llm.embed(batch, use_tqdm=False)
    return [np.asarray(o.outputs.embedding, dtype=np.float32) for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=4096)
    parser.add_argument("--trials", type=int, default=5)
    add_model_args(parser)
    args = parser.parse_args()
    print(cpu_line())
    llm = offline_llm("embed", embed_model_dir(args))
    batch = texts(args.texts)
    a, b = with_encode(llm, batch[:64]), with_embed(llm, batch[:64])  # warm up both paths
    same = all(np.allclose(x, y, atol=1e-5) for x, y in zip(a, b, strict=True))
    print(f"same vectors from both: {same}")
    took: dict[str, list[float]] = {"encode": [], "embed": []}
    for trial in range(args.trials):
        for name, fn in (("encode", with_encode), ("embed", with_embed)):
            if trial % 2:  # alternate which goes first
                name, fn = ("embed", with_embed) if name == "encode" else ("encode", with_encode)
            _, seconds = timed(lambda fn=fn: fn(llm, batch))
            took[name].append(seconds)
            print(f"trial {trial}: {name} {args.texts} texts in {seconds:.2f} s "
                  f"({args.texts / seconds:,.0f} texts/s)")
    encode, embed = statistics.median(took["encode"]), statistics.median(took["embed"])
    print(f"median: encode {encode:.2f} s, embed {embed:.2f} s")
    print(f"embed/encode time ratio = {embed / encode:.3f} (1.0 = as fast; > 1 = embed slower)")


if __name__ == "__main__":
    main()
