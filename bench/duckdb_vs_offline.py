"""ai_query in DuckDB vs vLLM offline and vs a per-row OpenAI-client loop, same run.

Chat: 4096 prompts in a DuckDB table (max_tokens 8, temperature 0: several 2048-row chunks on
several DuckDB threads) through ``SELECT ai_query(...) FROM t`` vs ``LLM.chat`` on the same
prompts in each of two baselines, each vLLM offline in a process of its own (as in
``shared_prefix.py``): ``default`` = ``LLM(model, dtype="bfloat16")`` as a user writes it first,
``tuned`` = ai_query's engine arguments for this machine; the faster is "best", and rows whose
answer differs from each baseline's are counted. Also rows/s of a per-row loop of the ``openai``
client against vLLM's own api_server (a 128-row sample). Embeddings: 8192 rows vs ``LLM.embed``
with ai_query's settings. The machine (CPU flags) and each side's settings are printed first,
the ratios last.

``ai_query.connect()`` runs vLLM in a private engine server process (what users get); the same
queries also run with the engine inside the benchmark's own process (``--in-process``: the
design before the engine moved out), so the cost of the process boundary shows in one run.

    .venv/bin/python bench/duckdb_vs_offline.py [--chat-rows 4096] [--embed-rows 8192]
        [--in-process] [--no-per-row] [--model DIR] [--embed-model DIR]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    CHAT_ENDPOINT,
    DEFAULT_BASELINE,
    EMBED_ENDPOINT,
    OfflineBaseline,
    add_model_args,
    bench_catalog,
    chat_model_dir,
    chat_prompts,
    cpu_line,
    embed_model_dir,
    offline_llm,
    query_rows,
    texts,
    timed,
)

MAX_TOKENS = 8
#: ai_query against vLLM's defaults and against the faster baseline (unique prompts).
CHAT_GOALS = {"default": 1.0, "best": 0.97}
#: How the report names ai_query's sides (the baselines are ``offline LLM.chat <name>``).
CHAT_SIDES = {"in_process": "in-process engine in DuckDB", "ours": "ai_query in DuckDB"}


def duckdb_run(
    endpoint: str, rows: list[str], params: str, catalog: Any, in_process: bool = False
) -> tuple[float, list[Any]]:
    """(seconds, answers in row order) of ``SELECT ai_query(...) FROM t`` over ``rows``."""
    import ai_query
    from ai_query.engine.local import LocalEngine

    con = ai_query.connect(catalog=catalog, engine=LocalEngine(catalog) if in_process else None)
    con.sql(f"SELECT ai_query('{endpoint}', 'warm up'{params})").fetchall()
    result = query_rows(con, endpoint, rows, params)
    con.close()
    return result


def per_row_openai(prompts: list[str], max_tokens: int, model_dir: Path) -> float:
    """rows/s of one client calling vLLM's api_server row by row."""
    import openai

    from tests.servers import free_port, stop, vllm_api_server, wait_http

    port = free_port()
    log = Path(tempfile.mkdtemp()) / "vllm.log"
    proc = vllm_api_server(model_dir, port, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=400)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")

        def loop() -> None:
            for p in prompts:
                client.chat.completions.create(
                    model="smollm2",
                    messages=[{"role": "user", "content": p}],
                    max_tokens=max_tokens,
                    temperature=0.0,
                )

        loop_prompts = prompts[:4]
        for p in loop_prompts:  # warm up
            client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": p}], max_tokens=2
            )
        _, seconds = timed(loop)
        return len(prompts) / seconds
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chat-rows", type=int, default=4096)
    parser.add_argument("--embed-rows", type=int, default=8192)
    parser.add_argument("--sample-rows", type=int, default=128)
    parser.add_argument("--in-process", action="store_true", help="also run vLLM in-process")
    parser.add_argument("--no-per-row", action="store_true", help="skip the openai-client loop")
    add_model_args(parser)
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    catalog = bench_catalog(args)
    chat = run_chat(args, catalog) if args.chat_rows else None
    embed = run_embeddings(args, catalog) if args.embed_rows else None
    per_row = None if args.no_per_row or chat is None else per_row_openai(
        chat_prompts(args.sample_rows + 7)[7:], MAX_TOKENS, chat_model_dir(args)
    )
    if embed is not None:
        offline_e, inproc_e, ours_e = embed
        rows = args.embed_rows
        print(f"embeddings rows/s: offline LLM.embed {rows / offline_e:.1f}, "
              f"ai_query in DuckDB {rows / ours_e:.1f}")
        if inproc_e is not None:
            print(f"ratio embeddings in-process engine/offline = {offline_e / inproc_e:.3f} "
                  "(the design before the private server)")
        print(f"ratio embeddings ours/LLM.embed = {offline_e / ours_e:.3f} (goal >= 0.9)")
    if chat is not None:
        report_chat(chat, args.chat_rows, per_row)


def report_chat(chat: dict[str, Any], rows: int, per_row: float | None) -> None:
    """Print the chat figures (see :func:`run_chat`); the last line: ai_query against best."""
    seconds = chat["seconds"]
    ours = seconds["ours"]
    best = min(seconds["default"], seconds["tuned"])
    print("chat rows/s: " + ", ".join(
        f"{CHAT_SIDES.get(side, f'offline LLM.chat {side}')} {rows / s:.1f}"
        for side, s in seconds.items()
    ) + (f", per-row openai client {per_row:.1f}" if per_row else ""))
    print("chat answers differing from ai_query's: " + ", ".join(
        f"{side} {n} of {rows}" for side, n in chat["differ"].items()
    ))
    if "in_process" in seconds:
        print(f"ratio chat in-process engine/tuned offline = "
              f"{seconds['tuned'] / seconds['in_process']:.3f} (the design before the private server)")
    if per_row:
        print(f"ratio chat ours/per-row openai = {(rows / ours) / per_row:.2f} (goal >= 5)")
    print(f"ratio chat ours/tuned = {seconds['tuned'] / ours:.3f}")
    print(f"ratio chat ours/default = {seconds['default'] / ours:.3f} "
          f"(goal >= {CHAT_GOALS['default']})")
    print(f"ratio chat ours/best vLLM = {best / ours:.3f} (goal >= {CHAT_GOALS['best']})")


def run_chat(args: argparse.Namespace, catalog: Any) -> dict[str, Any]:
    """``--chat-rows`` chats through each baseline, then (with ``--in-process``) the in-process
    engine, then ai_query: ``seconds`` per side and ``differ``, rows whose answer differs from
    ai_query's, per baseline."""
    from ai_query.engine.backends.registry import close_backends

    prompts = chat_prompts(args.chat_rows)
    model = chat_model_dir(args)
    seconds: dict[str, float] = {}
    answers: dict[str, list[Any]] = {}
    for side, engine_args in (("default", DEFAULT_BASELINE), ("tuned", None)):
        baseline = OfflineBaseline(model, engine_args)  # one at a time, each in its own process
        print(f"chat baseline {side}: {baseline.settings}", flush=True)
        try:
            baseline.chat(prompts[:8], MAX_TOKENS)
            seconds[side], answers[side] = baseline.chat(prompts, MAX_TOKENS)
        finally:
            baseline.close()
    chat_params = f", modelParameters => {{'max_tokens': {MAX_TOKENS}}}"
    if args.in_process:
        seconds["in_process"], _ = duckdb_run(
            CHAT_ENDPOINT, prompts, chat_params, catalog, in_process=True
        )
        close_backends()
    seconds["ours"], ours = duckdb_run(CHAT_ENDPOINT, prompts, chat_params, catalog)
    differ = {
        side: sum(a != b for a, b in zip(ours, answers[side], strict=True)) for side in answers
    }
    return {"seconds": seconds, "differ": differ}


def run_embeddings(args: argparse.Namespace, catalog: Any) -> tuple[float, float | None, float]:
    """Seconds for ``--embed-rows`` texts: offline, in-process engine (or None), ours."""
    from ai_query.engine.backends.registry import close_backends

    docs = texts(args.embed_rows)
    emb = offline_llm("embed", embed_model_dir(args))
    emb.embed(docs[:8], use_tqdm=False)
    _, offline_e = timed(lambda: emb.embed(docs, use_tqdm=False))
    emb = None
    gc.collect()
    inproc_e = None
    if args.in_process:
        inproc_e = duckdb_run(EMBED_ENDPOINT, docs, "", catalog, in_process=True)[0]
        close_backends()
    return offline_e, inproc_e, duckdb_run(EMBED_ENDPOINT, docs, "", catalog)[0]


if __name__ == "__main__":
    main()
