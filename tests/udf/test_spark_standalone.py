"""A real Spark standalone cluster runs ``ai_query`` over two engine servers, and survives losing
one of them mid-query.

The master and two workers (one core each) are started with ``spark-class``, each in its own
process group, and stopped by killing those groups. The engine servers are two ``ai-query serve``
processes hosting a test engine that holds each batch a little (:mod:`ai_query.testing`), so a
query lasts long enough to SIGKILL one server while its batches are in flight. The driver is a
user's script file, run as ``python file.py``; ``spark.task.maxFailures=1`` makes any failed
task fail the job, so what survives a dead server is the Flight client's failover alone, not
Spark re-running tasks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_query.engine.core.batch import align_results, request_batch
from ai_query.engine.flight.client import FlightEngineClient
from ai_query.engine.process.launcher import ServerProcess, start_server_process
from ai_query.options import CallOptions
from tests.processes import run_script
from tests.servers import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

CHAT = "smollm2-135m-instruct"
ROWS = 2000
#: The deterministic engine holding each batch 0.1 s: 2,000 rows in 50-row Spark batches (each
#: sent as concurrent slices, each slice cut in two chunks, one per server) keep the query
#: running for a few seconds.
SLOW = "ai_query.testing:delayed_engine(delay=0.1)"
PROMPTS = [f"prompt number {i} of the standalone test" for i in range(ROWS)]

SCRIPT = """
import json
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql.functions import pandas_udf
from ai_query.udf.spark import register

spark = (SparkSession.builder.master({master!r}).appName("ai-query-standalone-test")
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.executor.memory", "512m")
         .config("spark.driver.memory", "512m")
         .config("spark.task.maxFailures", "1")
         # wait for both executors before the first task, so both run some
         .config("spark.scheduler.minRegisteredResourcesRatio", "1.0")
         .config("spark.scheduler.maxRegisteredResourcesWaitingTime", "60s")
         .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1")
         .config("spark.executor.extraJavaOptions", "-XX:TieredStopAtLevel=1")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")

def executor(ids: pd.Series) -> pd.Series:
    import os
    return pd.Series([os.getppid()] * len(ids))  # the PySpark daemon: one per executor

spark.udf.register("executor", pandas_udf(executor, "long"))
register(spark, engine_url={urls!r}, batch_size=50)
prompts = json.load(open({prompts!r}))
spark.createDataFrame(list(enumerate(prompts)), "id INT, p STRING") \\
    .repartition(4).createOrReplaceTempView("t")
rows = spark.sql("SELECT id, ai_query('{chat}', p) AS a, executor(id) AS e FROM t").collect()
print("RESULT " + json.dumps({{
    "ids": [r.id for r in rows], "answers": [r.a for r in rows],
    "executors": sorted({{r.e for r in rows}}),
}}), flush=True)
spark.stop()
"""


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _alive_workers(webui: str) -> int:
    """How many ALIVE workers the master's web UI lists; -1 while it does not answer, or answers
    its HTML page instead (a master just started can, before its JSON handler is attached)."""
    try:
        with urllib.request.urlopen(f"{webui}/json/", timeout=2) as resp:
            state = json.load(resp)
    except (OSError, ValueError):
        return -1
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


def _wait_for(
    workers: int, webui: str, procs: list[subprocess.Popen[bytes]], logs: Path, timeout: float
) -> None:
    """Wait until the master lists ``workers`` ALIVE workers (0: until it answers)."""
    deadline = time.monotonic() + timeout
    while _alive_workers(webui) < workers:
        dead = [p.args for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                for log in sorted(logs.glob("*.log"))
            )
            raise AssertionError(f"the cluster did not get {workers} ALIVE workers ({dead})\n"
                                 f"{tails}")
        time.sleep(0.2)


def _spark_class(
    args: list[str], log: Path, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [str(_spark_home() / "bin" / "spark-class"), *args], stdout=out,
            stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group this test created (a worker's executors and their Python
    workers are in it), by its leader's PID."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A standalone master with two ALIVE one-core workers; its ``spark://`` URL."""
    work = tmp_path_factory.mktemp("spark")
    env = {
        **os.environ, "SPARK_HOME": str(_spark_home()), "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    port, webui = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    procs = [_spark_class(
        ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(webui)], work / "master.log", env, work,
    )]
    webui_url = f"http://127.0.0.1:{webui}"
    try:
        # workers started before the master listens retry only after 5-15 s
        _wait_for(0, webui_url, procs, work, timeout=60)
        for n in range(2):
            worker_dir = work / f"worker{n}"
            worker_dir.mkdir()
            procs.append(_spark_class(
                ["org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                 "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
                 "--work-dir", str(worker_dir)], work / f"worker{n}.log", env, worker_dir,
            ))
        _wait_for(2, webui_url, procs, work, timeout=60)
        yield url
    finally:
        for proc in reversed(procs):
            _kill_group(proc)


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Two ``ai-query serve`` processes hosting the slow test engine."""
    started: list[ServerProcess] = []
    try:
        for _ in range(2):
            started.append(start_server_process(preload=False, engine_factory=SLOW))
        yield started
    finally:
        for server in started:
            server.stop(grace=5)


def _rows(url: str) -> int:
    client = FlightEngineClient([url])
    try:
        return int(client.health()[url].get("rows", 0))
    finally:
        client.close()


def _expected() -> list[str]:
    """The deterministic engine's own answers, computed here."""
    from ai_query.catalog import Catalog
    from ai_query.engine.kinds import EngineKind
    from ai_query.engine.spec import in_process_engine

    engine = in_process_engine(Catalog.default(), EngineKind.DETERMINISTIC)
    try:
        out = align_results(engine.run(request_batch(PROMPTS, CallOptions(endpoint=CHAT))), ROWS)
    finally:
        engine.close()
    return [str(a) for a in out.column("result").to_pylist()]


def _start_query(tmp_path: Path, master: str, urls: list[str]) -> subprocess.Popen[str]:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS))
    body = SCRIPT.format(master=master, urls=urls, prompts=str(prompts), chat=CHAT)
    return run_script(tmp_path, body)


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"the driver exited {proc.returncode}: {out[-2000:]}"
    return dict(json.loads(lines[0][len("RESULT "):]))


def _check_answers(result: dict[str, Any]) -> None:
    """Every id once, each with its own prompt's answer (so none moved to another row)."""
    ids, answers = result["ids"], result["answers"]
    assert sorted(ids) == list(range(ROWS))
    expected = _expected()
    wrong = [i for i, a in zip(ids, answers, strict=True) if a != expected[i]]
    assert not wrong, f"{len(wrong)} rows answered wrongly, e.g. {wrong[:5]}"
    assert len(result["executors"]) == 2  # both executors ran tasks


def test_both_servers_answer_a_query_on_a_standalone_cluster(
    master: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    urls = [s.url for s in servers]
    before = [_rows(u) for u in urls]
    result = _result(_start_query(tmp_path, master, urls))
    _check_answers(result)
    served = [_rows(u) - b for u, b in zip(urls, before, strict=True)]
    assert all(n > 0 for n in served), served
    assert sum(served) == ROWS  # no failure: each row went to a server exactly once


def test_a_server_killed_mid_query_loses_and_repeats_no_row(
    master: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    victim, survivor = servers
    client = FlightEngineClient([victim.url])
    proc = _start_query(tmp_path, master, [victim.url, survivor.url])
    try:
        deadline = time.monotonic() + 90
        while True:  # kill it once it has answered some rows and has a batch in flight
            health = client.health(timeout=2)[victim.url]
            if health.get("rows", 0) >= 200 and health.get("active_exchanges", 0) > 0:
                break
            assert proc.poll() is None, "the query ended before the server was killed"
            assert time.monotonic() < deadline, f"the server never got busy: {health}"
            time.sleep(0.02)
        survivor_before = _rows(survivor.url)
        victim.kill()  # SIGKILL to its process group, by PID
        assert proc.poll() is None, "the query ended before the server was killed"
        result = _result(proc)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _check_answers(result)
    assert not victim.alive()
    # the survivor answered the rest, including the chunks that were in flight on the victim
    assert _rows(survivor.url) - survivor_before >= ROWS // 4
