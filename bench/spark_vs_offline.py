"""ai_query in Spark SQL, run the way a user runs it, vs vLLM offline ``LLM.chat`` / ``LLM.embed``.

Each side is a separate ``python file.py`` process (scripts written into a temporary directory,
no ``__main__`` guard), started afresh for every trial; the sides alternate trial by trial so
load from other processes on the machine hits both alike, and every trial uses fresh prompts.

- **spark**: a local[2] SparkSession (``local_session("local[2]")``), ``register(spark)`` with no
  engine address, so ai_query starts its embedded engine server exactly as a user gets it; a
  first small query warms the Python workers and the engine; the table (``--rows`` distinct
  prompts, two partitions) is cached; then ONE plain ``spark.sql`` (typed by ai_query's
  extension, which ``register`` installs on the session)
  ``SELECT id, ai_query(<chat endpoint>, prompt, modelParameters => named_struct('max_tokens',
  N)) AS answer FROM t`` is timed (``collect()``; embeddings: ``toArrow()``).
  ``--server external`` instead sets ``AI_QUERY_ENGINE_URL`` to an ``ai-query serve`` the
  benchmark started beforehand (same catalog), for comparison.
- **offline**: vLLM's ``LLM.chat`` on the same prompts (same engine settings as ours), after
  a small warm-up chat.

``--task embed`` times ``SELECT id, ai_query(<embeddings endpoint>, prompt) AS answer FROM t``
instead (vectors come back as ``ARRAY<FLOAT>``) against ``LLM.embed`` on the same texts.

Output tokens/s (texts/s for embeddings) of each side per trial and over all trials; the ratio
spark/offline is printed last. ``--model DIR`` runs any local Hugging Face model of the task
instead of the bundled SmolLM2 / MiniLM (the Spark side's catalog then gets an endpoint serving
DIR).

    .venv/bin/python bench/spark_vs_offline.py [--task chat|embed] [--rows 512]
        [--max-tokens 16] [--trials 2] [--model DIR] [--server embedded|external]
        [--keep-logs DIR] [--offline-tcmalloc]

Each trial line says which allocator each side ran on (ai_query's engine server preloads the
machine's tcmalloc; ``--offline-tcmalloc`` gives the offline side the same).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from common import CHAT_ENDPOINT, EMBED_ENDPOINT, chat_prompts, cpu_line, texts  # noqa: E402

TASKS = {"chat": ("llm/v1/chat", CHAT_ENDPOINT), "embed": ("llm/v1/embeddings", EMBED_ENDPOINT)}
#: Spark's throughput against vLLM offline's, per task (chat: issue 26's goal).
GOALS = {"chat": 0.93, "embed": 0.9}

#: The user's script: what someone writes to run ai_query over a table in local Spark.
SPARK_SCRIPT = """\
import json
import time

from ai_query.engine.flight.client import FlightEngineClient
from ai_query.udf.spark import local_session, register

settings = json.load(open({settings!r}))
spark = local_session("local[2]")
aq = register(spark, catalog=settings["catalog"])

embed = settings["task"] == "embed"
sql = ("SELECT id, ai_query('" + settings["endpoint"] + "', prompt"
       + ("" if embed else ", modelParameters => named_struct('max_tokens', "
          + str(settings["max_tokens"]) + ")") + ") AS answer FROM t")
warm = spark.createDataFrame(
    [(i, "Say hello (warm-up " + str(i) + ").") for i in range(8)], "id INT, prompt STRING")
warm.repartition(2).createOrReplaceTempView("t")
spark.sql(sql).collect()  # starts the Python workers, the engine answers once

table = spark.createDataFrame(list(enumerate(settings["prompts"])), "id INT, prompt STRING")
table = table.repartition(2).cache()
table.count()
table.createOrReplaceTempView("t")

watch = FlightEngineClient(list(aq.spec.urls), token=aq.spec.token or "")
def output_tokens():
    return sum(int(h["completion_tokens"]) for h in watch.health().values())

before = output_tokens()
start = time.perf_counter()
# Vectors come to the driver as Arrow (as LLM.embed's arrive in its process); text as Rows.
result = spark.sql(sql)  # plain spark.sql: ai_query's extension types the call
rows = result.toArrow() if embed else result.collect()
seconds = time.perf_counter() - start
rows = rows.to_pylist() if embed else [r.asDict() for r in rows]
units = len(rows) if embed else output_tokens() - before
if len(rows) != len(settings["prompts"]) or any(r["answer"] is None for r in rows):
    raise SystemExit("the Spark query lost rows")
server = aq.server
maps = open(f"/proc/{{server.pid}}/maps").read() if server is not None else ""
print(json.dumps({{
    "side": "spark", "seconds": seconds, "units": units, "native_types": aq.native_types,
    "malloc": "tcmalloc" if "libtcmalloc" in maps else "glibc",
    "answers": [len(r["answer"]) if embed else r["answer"] for r in sorted(rows, key=lambda r: r["id"])],
    "server_log": str(server.log_path) if server is not None else None,
}}), flush=True)
watch.close()
spark.stop()
"""

#: The baseline: vLLM's offline LLM on the same prompts, in its own process.
OFFLINE_SCRIPT = """\
import json
import sys
import time

sys.path.insert(0, {bench!r})
from common import offline_llm
from vllm import SamplingParams

settings = json.load(open({settings!r}))
if settings["task"] == "embed":
    llm = offline_llm("embed", model=settings["model"])
    llm.embed(["warm-up"], use_tqdm=False)
    start = time.perf_counter()
    outs = llm.embed(settings["prompts"], use_tqdm=False)
    seconds = time.perf_counter() - start
    units, answers = len(outs), [len(o.outputs.embedding) for o in outs]
else:
    llm = offline_llm("chat", model=settings["model"])
    params = SamplingParams(max_tokens=settings["max_tokens"], temperature=0.0)
    llm.chat([[{{"role": "user", "content": "Say hello (warm-up)."}}]], params, use_tqdm=False)
    convs = [[{{"role": "user", "content": p}}] for p in settings["prompts"]]
    start = time.perf_counter()
    outs = llm.chat(convs, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    units = sum(len(o.outputs[0].token_ids) for o in outs)
    answers = [o.outputs[0].text for o in outs]
malloc = "tcmalloc" if "libtcmalloc" in open("/proc/self/maps").read() else "glibc"
print(json.dumps({{"side": "offline", "seconds": seconds, "units": units, "answers": answers,
                  "malloc": malloc}}), flush=True)
"""


def write_catalog(model: str | None, task: str, path: Path) -> tuple[str | None, str]:
    """The catalog file the user's script registers (None: the default) and the endpoint."""
    kind, bundled = TASKS[task]
    if model is None:
        return None, bundled
    endpoint = f"bench-{task}"
    path.write_text(json.dumps({
        "include_defaults": True,
        "endpoints": [{"name": endpoint, "config": {"served_entities": [
            {"entity_name": str(Path(model).resolve()), "task": kind}]}}],
        "task_functions": {kind: endpoint},
    }))
    return str(path), endpoint


def run_side(script: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run one side's script; its JSON result line (its output goes to ``log``)."""
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=out, env=env,
            cwd=script.parent, text=True, timeout=1800, check=False,
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{script.name} failed (exit {proc.returncode}); see {log}:\n"
                         + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
    return dict(json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=tuple(TASKS), default="chat")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--model", help="a local HF model directory of the task (default: "
                        "the bundled SmolLM2 / MiniLM)")
    parser.add_argument("--server", choices=("embedded", "external"), default="embedded",
                        help="embedded: register(spark) starts its own (what users get); "
                        "external: a separately started ai-query serve in AI_QUERY_ENGINE_URL")
    parser.add_argument("--keep-logs", type=Path, help="copy the scripts' and servers' logs here")
    parser.add_argument("--offline-tcmalloc", action="store_true",
                        help="run the offline side with the machine's tcmalloc preloaded too")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    catalog, endpoint = write_catalog(args.model, args.task, work / "catalog.json")
    spark_script, offline_script = work / "spark_user.py", work / "offline_user.py"
    settings_path = work / "settings.json"
    spark_script.write_text(SPARK_SCRIPT.format(settings=str(settings_path)))
    offline_script.write_text(OFFLINE_SCRIPT.format(settings=str(settings_path), bench=str(BENCH)))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    env.pop("AI_QUERY_ENGINE_URL", None)
    env.pop("LD_PRELOAD", None)  # each side as it starts: ai_query preloads what it chooses
    offline_env = dict(env)
    if args.offline_tcmalloc:
        from ai_query.machine import this_machine

        offline_env["LD_PRELOAD"] = this_machine().tcmalloc or ""
    server = None
    if args.server == "external":
        from ai_query.catalog import Catalog
        from ai_query.engine.process.launcher import start_server_process

        server = start_server_process(Catalog.load(catalog) if catalog else None, preload=True)
        env["AI_QUERY_ENGINE_URL"] = server.url
    print(cpu_line())
    print(f"load average before start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"{args.task}, {args.rows} rows x {args.max_tokens} tokens; {args.server} server; "
          f"model {args.model or endpoint}", flush=True)

    unit = "texts" if args.task == "embed" else "tokens"
    every = (texts if args.task == "embed" else chat_prompts)(args.rows * args.trials)
    totals = {"spark": [0, 0.0], "offline": [0, 0.0]}
    ratios, same = [], 0
    try:
        for trial in range(args.trials):
            prompts = every[trial * args.rows:(trial + 1) * args.rows]
            settings_path.write_text(json.dumps({
                "prompts": prompts, "max_tokens": args.max_tokens, "catalog": catalog,
                "endpoint": endpoint, "model": args.model, "task": args.task,
            }))
            sides = [("spark", spark_script), ("offline", offline_script)]
            results = {}
            for name, script in sides if trial % 2 == 0 else sides[::-1]:
                log = work / f"{name}-{trial + 1}.log"
                results[name] = run_side(script, offline_env if name == "offline" else env, log)
            s, o = results["spark"], results["offline"]
            for name, r in results.items():
                totals[name][0] += r["units"]
                totals[name][1] += r["seconds"]
            if not s["native_types"]:
                raise SystemExit("ai_query's Spark extension was not installed on the session")
            ratios.append((s["units"] / s["seconds"]) / (o["units"] / o["seconds"]))
            same += sum(a == b for a, b in zip(s["answers"], o["answers"], strict=True))
            print(f"trial {trial + 1}: spark {s['units']} {unit} in {s['seconds']:.2f}s "
                  f"= {s['units'] / s['seconds']:.1f}/s; offline "
                  f"{o['units']} {unit} in {o['seconds']:.2f}s = "
                  f"{o['units'] / o['seconds']:.1f}/s; ratio {ratios[-1]:.3f}; malloc spark "
                  f"server {s['malloc']}, offline {o['malloc']}; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
            if args.keep_logs and s.get("server_log") and Path(s["server_log"]).exists():
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(s["server_log"], args.keep_logs / f"server-{trial + 1}.log")
    finally:
        if server is not None:
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(server.log_path, args.keep_logs / "external-server.log")
            server.stop()
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("*.log"):
                shutil.copy(log, args.keep_logs / log.name)
        shutil.rmtree(work, ignore_errors=True)
    spark_tps = totals["spark"][0] / totals["spark"][1]
    offline_tps = totals["offline"][0] / totals["offline"][1]
    print(f"identical answers: {same}/{args.rows * args.trials}")
    print(textwrap.fill(
        f"output {unit}/s over {args.trials} trials: offline {offline_tps:.1f}, "
        f"ai_query in Spark ({args.server} server) {spark_tps:.1f}; per-trial ratios "
        + ", ".join(f"{r:.3f}" for r in ratios), 100))
    print(f"ratio spark/offline = {spark_tps / offline_tps:.3f} (goal >= {GOALS[args.task]})")


if __name__ == "__main__":
    main()
