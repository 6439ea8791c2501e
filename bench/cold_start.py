"""Cold start: seconds to the first answered row, ``ai-query sql`` against a bare vLLM script.

ai_query: ``.venv/bin/ai-query sql "SELECT ai_query('smollm2-135m-instruct', 'hi')"`` run as a
subprocess, as a user runs it (the CLI starts its private engine server, which starts vLLM).
Baseline: a script file run with the venv's Python that imports vLLM, builds ``LLM(...)`` with the
settings our engine server gives vLLM (environment and engine arguments) and answers one chat.
Each side is timed from spawn to its answer on stdout (the row printed); the sides alternate over
``--trials``. Where ai_query's processes write start-up marks to the JSON-lines file named by
``AI_QUERY_TIMINGS`` (CLI import, server listening, vLLM import, engine build, first row), the
seconds are broken down by step; without marks only the totals are reported.

    .venv/bin/python bench/cold_start.py [--trials 2] [--model DIR]

With ``--model DIR`` (any local Hugging Face chat model directory) both sides run DIR: ours
through a catalog file with one chat endpoint that serves DIR. The ratio is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    CHAT_ENDPOINT,
    add_model_args,
    bench_catalog,
    chat_model_dir,
    cpu_line,
    engine_settings,
    write_catalog,
)

SQL = f"SELECT ai_query('{CHAT_ENDPOINT}', 'hi')"

BARE_SCRIPT = """\
import json, os, sys, time
marks = {{}}
os.environ.update({env!r})   # our engine server's vLLM environment, before vllm is imported
from vllm import LLM, SamplingParams
from vllm.config import StructuredOutputsConfig
marks["vllm imported"] = time.time()
args = {args!r}
args["structured_outputs_config"] = StructuredOutputsConfig(**args["structured_outputs_config"])
llm = LLM(model={model!r}, **args)
marks["engine built"] = time.time()
out = llm.chat([{{"role": "user", "content": "hi"}}],
               SamplingParams(max_tokens={max_tokens}, temperature=0.0), use_tqdm=False)
marks["answered"] = time.time()
print("answer", json.dumps(out[0].outputs[0].text), flush=True)
print("marks", json.dumps(marks), file=sys.stderr, flush=True)
"""

#: ai_query's steps (from AI_QUERY_TIMINGS), in the order they happen on a cold start.
STEPS = (
    "cli: imported",
    "launcher: server spawn",
    "server: started",
    "server: vllm import start",
    "server: listening",
    "server: warm",
    "launcher: server ready",
    "cli: query planned",
    "server: vllm imported",
    "zygote: imported",
    "engine: build start",
    "engine: process from the zygote",
    "engine: process afresh",
    "engine: ready",
    "cli: result",
)


def timed_run(
    cmd: list[str], env: dict[str, str], log: Path
) -> tuple[float, float, str, float]:
    """Run ``cmd`` (stderr to ``log``); seconds to its first stdout line, seconds to its exit,
    its stdout, and the unix time it was spawned."""
    began = time.time()
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        answered = time.time() - began
        rest = proc.stdout.read()
        code = proc.wait()
    if code != 0 or not first:
        raise RuntimeError(f"{cmd[:2]} failed ({code}); log {log}:\n{log.read_text()[-3000:]}")
    text = (first + rest).decode(errors="replace")
    return answered, time.time() - began, text, began


def ours(args: argparse.Namespace, workdir: Path, trial: int) -> dict[str, Any]:
    """One cold ``ai-query sql`` run; seconds to the row, to exit, and each step's time."""
    timings = workdir / f"timings-{trial}.jsonl"
    cmd = [str(Path(sys.executable).with_name("ai-query")), "sql", SQL]
    if args.model is not None:
        cmd += ["--catalog", str(write_catalog(bench_catalog(args, embeddings=False),
                                               workdir / "catalog.json"))]
    env = {**os.environ, "AI_QUERY_TIMINGS": str(timings), "PYTHONUNBUFFERED": "1"}
    answered, exited, text, began = timed_run(cmd, env, workdir / f"ours-{trial}.log")
    marks: dict[str, float] = {}
    lines = timings.read_text().splitlines() if timings.exists() else []
    for line in lines:
        mark = json.loads(line)
        marks.setdefault(mark["step"], mark["t"] - began)
    return {"answered": answered, "exited": exited, "marks": marks, "output": text}


def bare(args: argparse.Namespace, workdir: Path, trial: int) -> dict[str, Any]:
    """One run of the bare vLLM script; seconds to the answer, to exit, and its steps."""
    from ai_query.engine.core.ceiling import DEFAULT_MAX_TOKENS  # what ai_query(..., 'hi') gets

    env_vllm, engine_args = engine_settings("chat")
    script = workdir / "bare_vllm.py"
    script.write_text(BARE_SCRIPT.format(
        env=env_vllm, args=engine_args, model=str(chat_model_dir(args)),
        max_tokens=DEFAULT_MAX_TOKENS))
    log = workdir / f"bare-{trial}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    answered, exited, text, began = timed_run([sys.executable, str(script)], env, log)
    marks = {}
    for line in log.read_text().splitlines():
        if line.startswith("marks "):
            marks = {k: v - began for k, v in json.loads(line[6:]).items()}
    return {"answered": answered, "exited": exited, "marks": marks, "output": text}


def breakdown(runs: list[dict[str, Any]]) -> None:
    """Where ai_query's seconds go: each step's median time since spawn, and the spans."""
    def at(step: str) -> float | None:
        values = [r["marks"][step] for r in runs if step in r["marks"]]
        return statistics.median(values) if values else None

    print("ai_query steps (median seconds since `ai-query sql` was spawned):")
    for step in STEPS:
        t = at(step)
        if t is not None:
            print(f"  {t:6.2f}  {step}")
    print(f"  {statistics.median(r['answered'] for r in runs):6.2f}  row printed")
    spans = [
        ("CLI import (interpreter, typer, ai_query)", "", "cli: imported"),
        ("server process: spawn to listening", "launcher: server spawn", "server: listening"),
        ("vllm import in the server (background)", "server: vllm import start",
         "server: vllm imported"),
        ("vllm import in the zygote (the engine process, beside the server's)",
         "server: vllm import start", "zygote: imported"),
        ("engine build (config, engine process: imports, model load, warm-up)",
         "engine: build start", "engine: ready"),
        ("first row: engine ready to result", "engine: ready", "cli: result"),
        ("result to row printed", "cli: result", ""),
    ]
    print("ai_query spans (seconds):")
    for name, a, b in spans:
        start = 0.0 if a == "" else at(a)
        end = statistics.median(r["answered"] for r in runs) if b == "" else at(b)
        if start is not None and end is not None:
            print(f"  {end - start:6.2f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    add_model_args(parser)
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    chat_model_dir(args)  # convert the bundled model now, outside the timed runs
    workdir = Path(tempfile.mkdtemp(prefix="cold-start-"))
    print(f"model: {args.model or CHAT_ENDPOINT + ' (bundled)'}; logs in {workdir}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {"ai_query": [], "bare vLLM": []}
    sides = {"ai_query": ours, "bare vLLM": bare}
    for trial in range(args.trials):
        order = list(sides) if trial % 2 == 0 else list(reversed(sides))
        for name in order:
            run = sides[name](args, workdir, trial)
            results[name].append(run)
            steps = ", ".join(f"{k} {v:.1f}" for k, v in run["marks"].items()
                              if name == "bare vLLM")
            print(f"trial {trial + 1} {name}: row after {run['answered']:.2f} s "
                  f"(exit after {run['exited']:.2f} s){'; ' + steps if steps else ''}",
                  flush=True)
    answer = results["ai_query"][-1]["output"].strip().splitlines()
    print("ai_query printed:", " | ".join(line.strip() for line in answer[:6]))
    breakdown(results["ai_query"])
    ours_s = statistics.median(r["answered"] for r in results["ai_query"])
    bare_s = statistics.median(r["answered"] for r in results["bare vLLM"])
    print(f"cold start to first row: bare vLLM {bare_s:.2f} s, ai_query {ours_s:.2f} s")
    print(f"cold start ratio ai_query/bare vLLM = {ours_s / bare_s:.3f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
