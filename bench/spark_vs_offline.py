"""ai_query in Spark SQL through an engine server (Arrow Flight) vs vLLM offline, same run.

512 distinct chat prompts (max_tokens 16, temperature 0) in a Spark DataFrame (local[2], two
partitions): ``SELECT ai_query('smollm2-135m-instruct', prompt, modelParameters => ...) FROM t``
through one engine server process, vs ``LLM.chat`` on the same prompts in this process. Both
engines stay loaded and the two sides alternate, trial by trial, so load from other processes
on the machine hits both alike; each trial uses fresh prompts (the server remembers greedy
answers). Output tokens/s of each side; the ratio is printed last.

    .venv/bin/python bench/spark_vs_offline.py [--rows 512] [--max-tokens 16] [--trials 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import chat_prompts, offline_llm, timed  # noqa: E402

CHAT = "smollm2-135m-instruct"


class SparkSide:
    """An engine server process and a local[2] SparkSession with ai_query registered."""

    def __init__(self) -> None:
        from ai_query.catalog import Catalog
        from ai_query.engine.flight_client import FlightEngineClient
        from ai_query.engine.launcher import start_server_process
        from ai_query.udf.spark import local_session, register

        catalog = Catalog([e for e in Catalog.default().endpoints() if e.name == CHAT])
        self.server = start_server_process(catalog, engine="local", preload=True)
        self.spark = local_session("local[2]", app_name="bench-spark-vs-offline")
        self.aq = register(self.spark, engine_url=self.server.url)
        self.watch = FlightEngineClient([self.server.url])

    def run(self, prompts: list[str], max_tokens: int) -> tuple[int, float, list[str]]:
        """Output tokens, seconds and answers (in prompt order) of one query."""
        frame = self.spark.createDataFrame(list(enumerate(prompts)), "id INT, prompt STRING")
        frame.repartition(2).createOrReplaceTempView("t")
        self.spark.table("t").cache().count()  # the table is data, not part of the timing
        sql = (f"SELECT id, ai_query('{CHAT}', prompt, modelParameters => "
               f"named_struct('max_tokens', {max_tokens})) AS answer FROM t")
        before = self._tokens()
        rows, took = timed(lambda: self.aq.sql(sql).collect())
        if len(rows) != len(prompts) or any(r.answer is None for r in rows):
            raise SystemExit("the Spark query lost rows")
        return self._tokens() - before, took, [r.answer for r in sorted(rows)]

    def _tokens(self) -> int:
        return int(self.watch.health()[self.server.url]["completion_tokens"])

    def close(self) -> None:
        self.watch.close()
        self.spark.stop()
        self.server.stop()


class OfflineSide:
    """vLLM's offline ``LLM`` in this process, same engine settings as the server."""

    def __init__(self) -> None:
        self.llm: Any = offline_llm("chat")

    def run(self, prompts: list[str], max_tokens: int) -> tuple[int, float, list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        convs = [[{"role": "user", "content": p}] for p in prompts]
        outs, took = timed(lambda: self.llm.chat(convs, params, use_tqdm=False))
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        return tokens, took, [o.outputs[0].text for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    every = chat_prompts(args.rows * (args.trials + 1))
    sets = [every[i * args.rows:(i + 1) * args.rows] for i in range(args.trials + 1)]
    print(f"load average before start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    spark_side = SparkSide()
    offline = OfflineSide()
    totals = {"spark": [0, 0.0], "offline": [0, 0.0]}
    ratios, same, compared = [], 0, 0
    try:
        for i, prompts in enumerate(sets):  # set 0 warms both sides up
            s_tok, s_sec, s_ans = spark_side.run(prompts, args.max_tokens)
            o_tok, o_sec, o_ans = offline.run(prompts, args.max_tokens)
            label = "warm-up" if i == 0 else f"trial {i}"
            print(f"{label}: spark+flight {s_tok} tokens in {s_sec:.2f}s = "
                  f"{s_tok / s_sec:.1f} tok/s; offline {o_tok} tokens in {o_sec:.2f}s = "
                  f"{o_tok / o_sec:.1f} tok/s; load {os.getloadavg()[0]:.2f}", flush=True)
            if i == 0:
                continue
            totals["spark"][0] += s_tok
            totals["spark"][1] += s_sec
            totals["offline"][0] += o_tok
            totals["offline"][1] += o_sec
            ratios.append((s_tok / s_sec) / (o_tok / o_sec))
            same += sum(a == b for a, b in zip(s_ans, o_ans, strict=True))
            compared += len(o_ans)
    finally:
        spark_side.close()
    spark_tps = totals["spark"][0] / totals["spark"][1]
    offline_tps = totals["offline"][0] / totals["offline"][1]
    print(f"identical answers: {same}/{compared}")
    print(f"output tok/s over {args.trials} trials: offline LLM.chat {offline_tps:.1f}, "
          f"ai_query in Spark via Flight {spark_tps:.1f}; per-trial ratios "
          + ", ".join(f"{r:.3f}" for r in ratios) + f" (median {statistics.median(ratios):.3f})")
    print(f"ratio spark+flight/offline = {spark_tps / offline_tps:.3f} (goal >= 0.85)")


if __name__ == "__main__":
    main()
