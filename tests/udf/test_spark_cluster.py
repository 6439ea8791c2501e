"""Executors in separate JVMs (``local-cluster[2,1,1024]``) reach the engine server.

Spark allows one SparkContext per process, so the cluster session runs in a child process;
it uses the session's real engine server, and its answers must match the server's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.flight.client import FlightEngineClient
from ai_query.options import CallOptions, ModelParameters

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

CHAT = "smollm2-135m-instruct"
PROMPTS = [f"Name a fruit that starts with the letter {c}." for c in "ABCDEFGH"]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import pandas as pd
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import pandas_udf
    from ai_query.udf.spark import register

    url, prompts = sys.argv[1], json.loads(sys.argv[2])
    spark = (SparkSession.builder.master("local-cluster[2,1,1024]")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")

    def executor_jvm(ids: pd.Series) -> pd.Series:
        import os
        # python worker -> pyspark daemon -> executor JVM
        daemon = os.getppid()
        with open(f"/proc/{daemon}/stat") as f:
            jvm = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{jvm}/comm") as f:
            name = f.read().strip()
        return pd.Series([f"{jvm}:{name}"] * len(ids))

    spark.udf.register("executor_jvm", pandas_udf(executor_jvm, "string"))
    aq = register(spark, engine_url=url)
    spark.createDataFrame(list(enumerate(prompts)), "id INT, p STRING") \\
        .repartition(4).createOrReplaceTempView("t")
    rows = aq.sql("SELECT id, ai_query('smollm2-135m-instruct', p, "
                  "modelParameters => named_struct('max_tokens', 8)) AS a, "
                  "executor_jvm(id) AS jvm FROM t").collect()
    print("RESULT " + json.dumps({
        "answers": {r.id: r.a for r in rows},
        "jvms": sorted({r.jvm for r in rows}),
        "driver_jvm": spark._jvm.java.lang.ProcessHandle.current().pid(),
    }))
    spark.stop()
    """
)


def test_executors_in_separate_jvms_reach_the_server(real_server: Any) -> None:
    client = FlightEngineClient([real_server.url])
    rows_before = client.health()[real_server.url]["rows"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, real_server.url, json.dumps(PROMPTS)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT "):])
    jvms = [j.split(":") for j in result["jvms"]]
    assert len(jvms) == 2 and all(name == "java" for _, name in jvms)
    assert str(result["driver_jvm"]) not in {pid for pid, _ in jvms}
    expected = align_results(client.run(request_batch(PROMPTS, CallOptions(
        endpoint=CHAT, model_parameters=ModelParameters(max_tokens=8)))), len(PROMPTS))
    answers = [result["answers"][str(i)] for i in range(len(PROMPTS))]
    assert answers == expected.column("result").to_pylist()
    assert client.health()[real_server.url]["rows"] >= rows_before + len(PROMPTS)
