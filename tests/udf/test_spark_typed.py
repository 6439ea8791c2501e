"""Typed results in plain ``spark.sql``, ``selectExpr`` and ``F.expr`` (ai_query's Spark
extension, :mod:`ai_query.udf.spark.typed`), through users' ``python file.py`` scripts on the real
engine server: a user's own session after ``register(spark)``, ``local_session()``, and a Spark
Connect client whose server runs pyspark's ``start-connect-server.sh $(ai-query spark-conf)``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT
from tests.servers import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

CHAT = "smollm2-135m-instruct"
SESSIONS = {
    "own": """
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
                 .getOrCreate())
    """,
    "local_session": """
        from ai_query.udf.spark import local_session
        spark = local_session("local[2]")
    """,
    "connect": """
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.remote(os.environ["CONNECT_URL"]).getOrCreate()
    """,
}
# The user's queries, after the session line: plain spark.sql, selectExpr, F.expr, a view,
# a CTE with a subquery, INSERT INTO ... SELECT, and a bad call refused at analysis.
QUERIES = f"""
    import json, os, sys
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F
    from ai_query.udf.spark import register

    register(spark, engine_url=os.environ["ENGINE_URL"])
    spark.createDataFrame(
        [(1, "I love it, great quality"), (2, "It broke after a day"), (3, None)],
        "id INT, review STRING",
    ).createOrReplaceTempView("reviews")
    small = "modelParameters => named_struct('max_tokens', 40)"
    frames = {{
        "struct": spark.sql(
            "SELECT id, ai_query('{CHAT}', review, "
            "returnType => 'STRUCT<label: STRING, score: DOUBLE>', " + small + ") AS r "
            "FROM reviews"),
        "vector": spark.sql("SELECT id, ai_query('all-minilm-l6-v2', review) AS r FROM reviews"),
        "safe": spark.sql(
            f"SELECT id, ai_query('{CHAT}', review, failOnError => false, " + small + ") AS r "
            "FROM reviews"),
        "array": spark.table("reviews").selectExpr(
            "id", f"ai_query('{CHAT}', review, 'ARRAY<STRING>', " + small + ") AS r"),
        "map": spark.table("reviews").select(
            "id", F.expr(f"ai_query('{CHAT}', review, returnType => 'MAP<STRING, INT>', "
                         "failOnError => false, " + small + ")").alias("r")),
        "extract": spark.sql(
            "SELECT id, ai_extract(review, array('product', 'problem')) AS r FROM reviews"),
    }}
    spark.sql(
        f"CREATE OR REPLACE TEMP VIEW labelled AS SELECT id, ai_query('{CHAT}', review, "
        "returnType => 'STRUCT<label: STRING>', " + small + ") AS r FROM reviews")
    frames["view"] = spark.sql("SELECT id, r.label AS r FROM labelled")
    frames["cte"] = spark.sql(
        "WITH s AS (SELECT id, ai_query('all-minilm-l6-v2', review) AS v FROM reviews) "
        "SELECT id, size(v) AS r FROM (SELECT * FROM s WHERE v IS NOT NULL)")
    spark.sql("CREATE TABLE IF NOT EXISTS out (id INT, r STRUCT<label: STRING>) USING parquet")
    spark.sql("INSERT INTO out SELECT id, r FROM labelled")
    frames["insert"] = spark.table("out")
    def plain(value):
        return value.asDict(recursive=True) if hasattr(value, "asDict") else value

    out = {{
        name: {{"type": frame.schema["r"].dataType.simpleString(),
               "rows": {{row["id"]: plain(row["r"]) for row in frame.collect()}}}}
        for name, frame in frames.items()
    }}
    try:
        spark.sql(f"SELECT ai_query('{CHAT}', review, returnType => 'STRUCT<x') FROM reviews")
        out["bad"] = None
    except AnalysisException as exc:
        out["bad"] = str(exc)
    spark.sql("DROP TABLE out")
    print("RESULT " + json.dumps(out))
"""


def _run(tmp_path: Path, session: str, env: dict[str, str]) -> dict[str, Any]:
    script = tmp_path / "user.py"
    script.write_text("import os\n" + textwrap.dedent(SESSIONS[session]) + textwrap.dedent(QUERIES))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable, **env},
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[0][len("RESULT "):])


def _check(out: dict[str, Any]) -> None:
    types = {name: part["type"] for name, part in out.items() if name != "bad"}
    assert types == {
        "struct": "struct<label:string,score:double>",
        "vector": "array<float>",
        "safe": "struct<result:string,errorMessage:string>",
        "array": "array<string>",
        "map": "struct<result:map<string,int>,errorMessage:string>",
        "extract": "struct<product:string,problem:string>",
        "view": "string",
        "cte": "int",
        "insert": "struct<label:string>",
    }
    rows = {name: part["rows"] for name, part in out.items() if name != "bad"}
    for name in types:  # NULL review: NULL result, in its own row
        assert rows[name].get("3") is None, name
    assert all(isinstance(rows["struct"][i]["label"], str) for i in ("1", "2"))
    assert [len(rows["vector"][i]) for i in ("1", "2")] == [384, 384]
    assert rows["cte"] == {"1": 384, "2": 384}
    assert all(rows["safe"][i]["errorMessage"] is None for i in ("1", "2"))
    for i in ("1", "2"):  # a map, or the reason there is none (the small model may not stop)
        assert (rows["map"][i]["result"] is None) != (rows["map"][i]["errorMessage"] is None)
    assert rows["insert"] == {k: None if v is None else {"label": v} for k, v in rows["view"].items()}
    assert out["bad"].startswith("bad returnType 'STRUCT<x': ")


@pytest.mark.parametrize("session", ["own", "local_session"])
def test_plain_spark_sql_returns_declared_types(
    tmp_path: Path, real_server: Any, session: str
) -> None:
    _check(_run(tmp_path, session, {"ENGINE_URL": real_server.url}))


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """pyspark's own Spark Connect server (local[2], 127.0.0.1), started with the flags of
    ``ai-query spark-conf``; stopped by killing its process group."""
    import pyspark

    home = Path(pyspark.__file__).parent
    work = tmp_path_factory.mktemp("connect")
    flags = subprocess.run(
        [str(Path(sys.executable).parent / "ai-query"), "spark-conf"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    port = free_port()
    env = {
        **os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(work), "SPARK_PID_DIR": str(work),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    log = (work / "server.log").open("w")
    server = subprocess.Popen(
        ["bash", str(home / "sbin" / "start-connect-server.sh"), "--wait", "--master", "local[2]",
         "--conf", f"spark.connect.grpc.binding.port={port}",
         "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
         "--conf", "spark.ui.enabled=false", *flags],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=work,
    )
    try:
        _wait_for(work / "server.log", "Spark Connect server started", server)
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        log.close()


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} in {timeout} s: {log.read_text()[-3000:]}")


def test_spark_connect_returns_declared_types(
    tmp_path: Path, real_server: Any, connect_server: str
) -> None:
    _check(_run(tmp_path, "connect", {"ENGINE_URL": real_server.url, "CONNECT_URL": connect_server}))


FALLBACK = f"""
    import json, warnings
    import ai_query.udf.spark.typed as typed
    from ai_query.errors import ConfigError
    from ai_query.udf.spark import local_session, register

    def no_jdk():
        raise ConfigError("no javac here")

    typed.jar_path = no_jdk  # a machine without a JDK's javac
    spark = local_session("local[2]")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aq = register(spark, embedded_engine="deterministic")
    spark.createDataFrame([(1, "great")], "id INT, review STRING").createOrReplaceTempView("t")
    query = "SELECT ai_query('{CHAT}', review, returnType => 'STRUCT<label: STRING>') AS r FROM t"
    print("RESULT " + json.dumps({{
        "warnings": [str(w.message) for w in caught],
        "plain": spark.sql(query).schema["r"].dataType.simpleString(),
        "aq": aq.sql(query).schema["r"].dataType.simpleString(),
        "row": aq.sql(query).collect()[0]["r"]["label"],
    }}))
"""


def test_without_the_extension_plain_sql_gets_text_and_aq_sql_still_types(tmp_path: Path) -> None:
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(FALLBACK))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable},
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert [w for w in out["warnings"] if "Spark extension" in w] == [
        "ai_query's Spark extension could not be installed on this session (no javac here); "
        "ai_query and the task functions return text in spark.sql (aq.sql still types them). "
        "Start Spark with `$(ai-query spark-conf)` instead"
    ]
    assert (out["plain"], out["aq"]) == ("string", "struct<label:string>")
    assert isinstance(out["row"], str)
