"""ai_query in Spark (local[2]) with deterministic engine servers: batch size, the per-worker
client cache, the embedded server, auth, run_sql, and a server killed mid-query."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pandas as pd
import pytest

from ai_query.errors import AuthenticationError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

CHAT = "smollm2-135m-instruct"


def _answer(prompt: str) -> str:
    return f"{CHAT} says: {prompt}"


def _batches(server: Any) -> int:
    from ai_query.engine.flight.client import FlightEngineClient

    client = FlightEngineClient([server.url], token=server.token or "")
    return int(client.health()[server.url]["batches"])


def test_the_local_session_jvm_compiles_quickly(spark) -> None:
    # In local mode the JVM's optimising JIT takes cores from the engine (see LOCAL_SESSION_CONF).
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    assert "-XX:TieredStopAtLevel=1" in list(runtime.getInputArguments())


def test_spark_arrow_batch_size_is_honoured(spark, det_server, restore_batch_size) -> None:
    from ai_query.udf.spark import ARROW_BATCH_CONF, register

    aq = register(spark, engine_url=det_server.url, batch_size=3)
    assert spark.conf.get(ARROW_BATCH_CONF) == "3"
    spark.createDataFrame([(i, f"p{i}") for i in range(10)], "id INT, p STRING") \
        .coalesce(1).createOrReplaceTempView("ten")
    before = _batches(det_server)
    # No ORDER BY: a global sort samples its input in a job of its own, which runs the UDF once
    # more (the engine's memo answers those rows again without the model).
    rows = sorted(aq.sql(f"SELECT id, ai_query('{CHAT}', p) AS a FROM ten").collect())
    assert [r.a for r in rows] == [_answer(f"p{i}") for i in range(10)]
    assert _batches(det_server) - before == 4  # Spark batches of 3, 3, 3 and 1 rows


def test_one_client_per_worker_process(spark, det_server, restore_batch_size) -> None:
    """Many batches in each Python worker share one FlightEngineClient (the spec-keyed cache)."""
    from pyspark.sql.functions import pandas_udf

    from ai_query.udf.spark import register

    aq = register(spark, engine_url=det_server.url, batch_size=2)
    spec = aq.spec

    def probe(ids: pd.Series) -> pd.Series:
        import gc

        from ai_query.engine.flight.client import FlightEngineClient
        from ai_query.engine.spec import get_engine

        clients = sum(isinstance(o, FlightEngineClient) for o in gc.get_objects())
        return pd.Series([f"{os.getpid()}:{id(get_engine(spec))}:{clients}"] * len(ids))

    spark.udf.register("probe", pandas_udf(probe, "string"))
    spark.createDataFrame([(i, f"q{i}") for i in range(40)], "id INT, p STRING") \
        .repartition(2).createOrReplaceTempView("forty")
    rows = spark.sql(f"SELECT id, ai_query('{CHAT}', p) AS a, probe(id) AS who FROM forty")\
        .collect()
    assert sorted(r.a for r in rows) == sorted(_answer(f"q{i}") for i in range(40))
    seen: dict[str, set[str]] = {}
    for r in rows:
        pid, engine_id, _clients = r.who.split(":")
        seen.setdefault(pid, set()).add(engine_id)
    # Every batch a worker process ran used the same client (reused workers may also hold
    # clients of other specs from earlier tests, so the process-wide count is not checked).
    assert all(len(ids) == 1 for ids in seen.values())


def _engine_states(server: Any) -> dict[str, str]:
    from ai_query.engine.flight.client import FlightEngineClient

    client = FlightEngineClient([server.url], token=server.token or "")
    try:
        states = client.health()[server.url]["endpoint_states"]
    finally:
        client.close()
    return {name: state["state"] for name, state in states.items()}


def test_embedded_server_in_local_mode(spark, monkeypatch) -> None:
    from ai_query.udf.spark import register, stop_embedded_servers

    monkeypatch.delenv("AI_QUERY_ENGINE_URL", raising=False)
    aq = register(spark, embedded_engine="deterministic")
    try:
        assert aq.server is not None and aq.server.alive()
        # No model runs before a query needs it, and a chat query starts only the chat model.
        assert set(_engine_states(aq.server).values()) == {"NOT_STARTED"}
        rows = aq.sql(f"SELECT ai_query('{CHAT}', 'hi') AS a").collect()
        assert rows[0].a == _answer("hi")
        states = _engine_states(aq.server)
        assert states[CHAT] == "READY"
        assert states["all-minilm-l6-v2"] == "NOT_STARTED"
    finally:
        stop_embedded_servers()
    assert not aq.server.alive()


def test_auth_refused_without_the_token(spark) -> None:
    from ai_query.engine.process.launcher import start_server_process
    from ai_query.udf.spark import register

    server = start_server_process(engine="deterministic", preload=False, token="sp4rk")
    try:
        with pytest.raises(AuthenticationError, match="refused the call \\(no token was sent\\)"):
            register(spark, engine_url=server.url, token="")
        aq = register(spark, engine_url=server.url, token="sp4rk")  # executors get it in the spec
        assert aq.sql(f"SELECT ai_query('{CHAT}', 'x') AS a").collect()[0].a == _answer("x")
    finally:
        server.stop(grace=5)


def test_run_sql_uses_the_active_session(spark, det_server) -> None:
    from ai_query.udf.spark import run_sql

    table = run_sql(f"SELECT ai_query('{CHAT}', 'a') AS a, ai_query('all-minilm-l6-v2', 'b') AS v",
                    engine_url=det_server.url)
    assert table.column("a").to_pylist() == [_answer("a")]
    assert len(table.column("v").to_pylist()[0]) == 384
    assert not spark.sparkContext._jsc.sc().isStopped()


def test_a_server_killed_mid_query(spark, restore_batch_size) -> None:
    """Two servers; one is killed while it holds batches; no row is lost or duplicated."""
    from ai_query.engine.flight.client import FlightEngineClient
    from ai_query.engine.process.launcher import start_server_process
    from ai_query.udf.spark import register

    slow = "ai_query.testing:delayed_engine(delay=0.4)"
    servers = [start_server_process(preload=False, engine_factory=slow) for _ in range(2)]
    try:
        aq = register(spark, engine_url=[s.url for s in servers], batch_size=25)
        n = 400
        spark.createDataFrame([(i, f"k{i}") for i in range(n)], "id INT, p STRING") \
            .repartition(2).createOrReplaceTempView("many")
        out: dict[str, Any] = {}

        def query() -> None:
            try:
                out["rows"] = aq.sql(f"SELECT id, ai_query('{CHAT}', p) AS a FROM many").collect()
            except Exception as exc:  # reported below
                out["error"] = exc

        thread = threading.Thread(target=query)
        thread.start()
        watcher = FlightEngineClient([servers[0].url])
        deadline = time.monotonic() + 60
        while watcher.health()[servers[0].url].get("active_exchanges", 0) == 0:
            assert time.monotonic() < deadline, "the first server never got a batch"
            time.sleep(0.02)
        servers[0].kill()
        thread.join(timeout=300)
        assert "error" not in out, out.get("error")
        rows = out["rows"]
        assert len(rows) == n and sorted(r.id for r in rows) == list(range(n))
        assert all(r.a == _answer(f"k{r.id}") for r in rows)
        assert not servers[0].alive()
    finally:
        for s in servers:
            s.stop(grace=5)
