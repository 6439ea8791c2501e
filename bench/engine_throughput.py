"""Engine throughput against vLLM's offline API, same prompts, same model, same run.

Chat: 512 prompts (max_tokens 32, temperature 0) through ``LLM.chat`` vs our LocalEngine fed as
8 concurrent Arrow batches. Embeddings: 4096 texts through ``LLM.embed`` vs our engine.
Prints output tok/s (chat) and texts/s (embeddings), ratios last.

    .venv/bin/python bench/engine_throughput.py [--chat-rows 512] [--embed-rows 4096] \
        [--model DIR] [--embed-model DIR]
"""

from __future__ import annotations

import argparse
import gc
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    add_model_args,
    bench_catalog,
    chat_model_dir,
    chat_prompts,
    cpu_line,
    embed_model_dir,
    offline_chat,
    offline_llm,
    report,
    texts,
    timed,
)


def ours(
    endpoint: str, rows: list[str], max_tokens: int | None, catalog: Any, batches: int = 8
) -> tuple[int, float]:
    import pyarrow.compute as pc

    from ai_query.engine.core.batch import align_results, request_batch
    from ai_query.engine.local import LocalEngine
    from ai_query.options import CallOptions, ModelParameters

    engine = LocalEngine(catalog, memo_entries=0)
    options = CallOptions(
        endpoint=endpoint, model_parameters=ModelParameters(max_tokens=max_tokens)
    )
    engine.run(request_batch(["warm up"], options))  # start the engine outside the timing
    size = -(-len(rows) // batches)
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]

    def one(chunk: list[str]) -> int:
        out = align_results(engine.run(request_batch(chunk, options)), len(chunk))
        return int(pc.sum(out.column("completion_tokens")).as_py() or 0)

    def all_batches() -> int:
        with ThreadPoolExecutor(len(chunks)) as pool:
            return sum(pool.map(one, chunks))

    return timed(all_batches)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chat-rows", type=int, default=512)
    parser.add_argument("--embed-rows", type=int, default=4096)
    add_model_args(parser)
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    catalog = bench_catalog(args)

    docs = texts(args.embed_rows)
    emb = offline_llm("embed", embed_model_dir(args))
    emb.embed(docs[:8], use_tqdm=False)
    _, base_e = timed(lambda: emb.embed(docs, use_tqdm=False))
    emb = None
    gc.collect()
    _, our_e = ours("all-minilm-l6-v2", docs, None, catalog)
    if not args.chat_rows:  # --chat-rows 0: embeddings only
        report("embeddings texts/s", len(docs) / our_e, len(docs) / base_e, "texts/s", 0.95)
        return

    prompts = chat_prompts(args.chat_rows)
    llm = offline_llm("chat", chat_model_dir(args))
    offline_chat(llm, prompts[:8], 32)  # warm up
    base_tokens, base_s = timed(lambda: offline_chat(llm, prompts, 32))
    llm = None
    gc.collect()
    our_tokens, our_s = ours("smollm2-135m-instruct", prompts, 32, catalog)

    print(f"chat tokens: offline {base_tokens}, ai_query {our_tokens}")
    report("embeddings texts/s", len(docs) / our_e, len(docs) / base_e, "texts/s", 0.95)
    report("chat output tok/s", our_tokens / our_s, base_tokens / base_s, "tok/s", 0.95)


if __name__ == "__main__":
    main()
