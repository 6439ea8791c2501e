"""``ai_query`` in Spark SQL: a pandas UDF whose Arrow batches go to engine servers over Flight.

:func:`register` installs on a SparkSession::

    ai_query(endpoint, request [, returnType] [, failOnError] [, modelParameters]
             [, responseFormat])

and the task functions. ai_query is one pandas UDF whose last four parameters have defaults, so
Spark 4 accepts every Databricks call form: positional, and named arguments (``=>``, any order).
``modelParameters`` may be a ``named_struct(...)`` or its JSON text. The UDF returns text: the
answer for string results, JSON for typed ones (a Spark UDF's type is fixed). Spark's analyzer
then types the calls (:mod:`ai_query.udf.spark.typed`: a small JVM extension, installed on the
session here or started with it), so plain ``spark.sql``, ``selectExpr`` and ``F.expr`` return
``returnType``, embeddings and ``failOnError => false`` as the declared Spark types, and a bad
call (unknown endpoint, bad returnType) fails at analysis. :meth:`SparkAIQuery.sql` runs
Databricks SQL through :func:`ai_query.sql.transpile`, which checks every call first (and, on a
session without the extension, wraps typed calls in ``from_json(...)`` itself).

Each Spark Arrow batch (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows; ``batch_size``
sets it) becomes one engine request batch per call, which the Flight client spreads over the
servers. The client is built once per Python worker process: the UDF carries only a picklable
:class:`~ai_query.engine.spec.EngineSpec`, and :func:`ai_query.engine.spec.get_engine` keeps
one client per spec in a module-level cache. With no server address and a local master, the
driver starts an engine server itself and stops it at exit (the embedded default). Like the
private server of a DuckDB connection, it starts each model when a query first needs it: an
endpoint no query calls never runs an engine beside the one that works (see
:func:`embedded_server`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from ai_query.catalog import Catalog
from ai_query.config import parse_engine_urls, settings
from ai_query.engine.core.budget import Budget, budget_tag, check_estimate, parse_budget
from ai_query.engine.flight.client import FlightEngineClient
from ai_query.engine.kinds import SERVER_ENGINE_KINDS, EngineKind
from ai_query.engine.process.launcher import ServerProcess, start_server_process
from ai_query.engine.recording import load_calls
from ai_query.engine.spec import EngineSpec, get_engine
from ai_query.errors import ConfigError, SQLError
from ai_query.sql import transpile
from ai_query.sql.task_calls import (
    answers_deciding_rows,
    explained_statement,
    mentions_ai_functions,
    reads_only,
)
from ai_query.sql.transpile import parse_sql
from ai_query.sql.vector_search import VectorIndexInfo
from ai_query.udf.explain import estimated_spend, explain_calls
from ai_query.udf.spark.typed import FUNCTIONS as TYPED_FUNCTIONS
from ai_query.udf.spark.typed import (
    PLAN_FUNCTION,
    EndpointTasks,
    hidden_name,
    install_builders,
    is_connect,
    plan_udtf,
)
from ai_query.udf.spark.udfs import spark_udfs
from ai_query.udf.usage import UsageHistory

#: The session settings of a query's budget (see :meth:`SparkAIQuery.session_budget`).
BUDGET_CONF = {"max_tokens": "ai_query.max_tokens", "max_cost": "ai_query.max_cost"}
#: Spark's setting for the rows per Arrow batch, i.e. per UDF call and engine request batch.
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"

_embedded: dict[tuple[str, str], ServerProcess] = {}
_embedded_lock = threading.Lock()
#: The registration of each Spark application (for the DataFrame functions).
_registered: dict[str, SparkAIQuery] = {}


class SparkAIQuery:
    """``ai_query`` registered on a SparkSession; runs Databricks SQL that calls it."""

    def __init__(
        self, spark: SparkSession, spec: EngineSpec, catalog: Catalog, name: str,
        server: ServerProcess | None,
    ) -> None:
        self.spark = spark
        """The session."""
        self.spec = spec
        """What the UDF's workers connect to."""
        self.catalog = catalog
        """Endpoints, for checking calls before Spark runs."""
        self.name = name
        """SQL name of the function."""
        self.server = server
        """The embedded engine server, when the driver started one."""
        self.vector_indexes: dict[str, VectorIndexInfo] = {}
        """The vector indexes made in this session (:mod:`ai_query.udf.spark.vector_index`)."""
        self.index_versions: dict[str, int] = {}
        """The Parquet version each index's view reads."""
        self.udfs: dict[str, Any] = {}
        """The registered UDFs by SQL name (``ai_query`` under :attr:`name`, task functions),
        for :mod:`ai_query.udf.spark.functions`."""
        self.native_types = False
        """Whether Spark's analyzer types the calls (:mod:`ai_query.udf.spark.typed`)."""

    def transpile(self, query: str, read: str = "databricks") -> str:
        """The Spark SQL that runs ``query`` (one statement).

        Raises:
            ConfigError, SQLParseError, UnsupportedCallError: a bad ai_query call.
        """
        if read == "spark" and not mentions_ai_functions(query):
            return query
        return transpile(
            query, read=read, write="spark", catalog=self.catalog,
            vector_indexes=self.vector_indexes, native_types=self.native_types,
        )

    def register_udfs(self, udfs: Mapping[str, Any]) -> None:
        """Register ``udfs`` (by function name) as the session's SQL functions."""
        for function, udf in udfs.items():
            sql_name = self.name if function == "ai_query" else function
            if function in TYPED_FUNCTIONS:
                self.spark.udf.register(hidden_name(function), udf)  # the typed builder's
                if self.native_types and sql_name == function:
                    continue
            self.spark.udf.register(sql_name, udf)

    def explain(self, query: str, read: str = "databricks") -> DataFrame:
        """What the AI calls of ``query`` would send, read and cost, with no model call: one
        row per call (:data:`ai_query.udf.explain.EXPLAIN_SCHEMA`; :meth:`explain_table`)."""
        return self.spark.createDataFrame(self.explain_table(query, read))

    def explain_table(self, query: str, read: str = "databricks") -> pa.Table:
        """:meth:`explain`'s rows as an Arrow table.

        The query runs once on Spark's own plan, so predicates, limits and joins act as they
        will, with the session's functions swapped for recorders. They run in Spark's Python
        workers, so they write each request batch into a local directory
        (:attr:`~ai_query.engine.kinds.EngineKind.RECORDING`: the driver and the workers share
        it on one machine) that the driver reads back, the real functions put back, and the
        calls are explained as DuckDB's are (:func:`ai_query.udf.explain.explain_calls`).

        Raises:
            SQLError: for anything but one query (a statement that writes would write).
        """
        trees = parse_sql(query, read)
        if len(trees) != 1 or not reads_only(trees[0]):
            raise SQLError("EXPLAIN in Spark takes one query (SELECT, WITH, VALUES)")
        statement = self.transpile(query, read)
        with tempfile.TemporaryDirectory(prefix="ai-query-explain-") as sink:
            spec = EngineSpec.for_catalog(
                self.catalog, kind=EngineKind.RECORDING, urls=(sink,), private_server=False
            )
            self.register_udfs(spark_udfs(spec, self.catalog))
            try:
                self.spark.sql(statement).write.format("noop").mode("overwrite").save()
            finally:
                self.register_udfs(self.udfs)
            calls = load_calls(Path(sink))
        return explain_calls(
            calls, get_engine(self.spec), self.catalog, UsageHistory(),
            deciding=answers_deciding_rows(trees[0]),
        )

    def session_budget(self) -> Budget:
        """The budget of each query with AI calls: the session's ``ai_query.max_tokens`` /
        ``ai_query.max_cost`` (``SET ai_query.max_tokens = 50000``, or ``spark.conf.set``).

        Raises:
            ConfigError: for a value that is not a number >= 0.
        """
        given = {
            field: value for field, value in (
                (field, self.spark.conf.get(key, None)) for field, key in BUDGET_CONF.items()
            ) if value not in (None, "")
        }
        return parse_budget(given, BUDGET_CONF)

    def _budgeted(self, query: str, statement: str, read: str, budget: Budget) -> DataFrame:
        """``statement``'s DataFrame under ``budget``: refused when EXPLAIN's estimate of
        ``query`` is over it; else its functions tag their batches with the budget, which the
        engine servers hold (rows past it carry the budget error)."""
        tokens, cost, what = estimated_spend(self.explain_table(query, read))
        check_estimate(budget, tokens, cost, what)
        spec = replace(self.spec, budget_tag=budget_tag(budget))
        self.register_udfs(spark_udfs(spec, self.catalog))
        try:
            return self.spark.sql(statement)  # analysed now: it keeps these functions
        finally:
            self.register_udfs(self.udfs)

    def sql(self, query: str, read: str = "databricks") -> DataFrame:
        """Run ``query`` (Databricks SQL by default); the last statement's DataFrame.
        ``EXPLAIN <query>`` with AI calls is :meth:`explain`'s table.

        Raises:
            ConfigError, SQLParseError, UnsupportedCallError: a bad ai_query call, before
                any Spark job starts.
        """
        explained = explained_statement(query)
        if explained is not None:
            return self.explain(explained, read)
        trees = parse_sql(query, read)
        statements = [query] if len(trees) <= 1 else [t.sql(dialect=read) for t in trees]
        spark_sql = [self.transpile(s, read) for s in statements]  # check every call first
        frame = None
        for source, statement in zip(statements, spark_sql, strict=True):
            budget = self.session_budget() if mentions_ai_functions(source) else Budget()
            if budget.limited:
                frame = self._budgeted(source, statement, read, budget)
            else:
                frame = self.spark.sql(statement)
        if frame is None:
            raise ConfigError("no SQL statement to run")
        return frame


def register(
    spark: SparkSession,
    catalog: Catalog | str | Path | None = None,
    engine_url: str | Sequence[str] | None = None,
    *,
    token: str | None = None,
    name: str = "ai_query",
    batch_size: int | None = None,
    embedded_engine: EngineKind | str = EngineKind.VLLM,
) -> SparkAIQuery:
    """Make ``ai_query(...)`` callable in ``spark.sql(...)``.

    Args:
        spark: the session.
        catalog: endpoints (object or file); None: the servers' catalog (or the bundled one
            for an embedded server).
        engine_url: engine server address(es), ``grpc://host:port`` (list or comma string);
            None: ``AI_QUERY_ENGINE_URL``; if that is unset too and the master is local, an
            embedded server is started (and stopped at exit).
        token: bearer token for the servers; None: ``AI_QUERY_TOKEN``.
        name: SQL name of the function.
        batch_size: rows per Spark Arrow batch (sets ``spark.sql.execution.arrow.
            maxRecordsPerBatch``); None keeps the session's setting.
        embedded_engine: what runs the models of an embedded server: ``vllm`` or
            ``deterministic`` (no model).

    Returns:
        A :class:`SparkAIQuery` whose ``sql`` runs Databricks SQL with typed results.

    Raises:
        ConfigError: no server address outside local mode, or a bad address or catalog.
        AuthenticationError: the servers refuse the token.
        EngineUnavailableError: no given server answers.
    """
    env = settings()
    if isinstance(catalog, (str, Path)):
        catalog = Catalog.load(catalog)
    urls = parse_engine_urls(engine_url) or env.engine_urls
    token = token if token is not None else env.token
    server = None
    if not urls:
        if not _is_local(spark):
            raise ConfigError(
                "no engine server for Spark: pass engine_url='grpc://host:port' or set "
                "AI_QUERY_ENGINE_URL (a server is only started automatically in local mode, "
                "on this machine)"
            )
        catalog = catalog or Catalog.default()
        server = embedded_server(catalog, embedded_engine)
        urls, token = (server.url,), None
    client = FlightEngineClient(urls, catalog=catalog, token=token or "")
    try:
        client.check()  # fail here, clearly, rather than in the first task
        catalog = client.catalog
    finally:
        client.close()
    spec = EngineSpec(kind=EngineKind.FLIGHT, urls=tuple(urls), token=token or None)
    if batch_size is not None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        spark.conf.set(ARROW_BATCH_CONF, str(batch_size))
    aq = SparkAIQuery(spark, spec, catalog, name, server)
    aq.udfs = spark_udfs(spec, catalog)
    aq.native_types = install_builders(spark)
    aq.register_udfs(aq.udfs)
    spark.udtf.register(PLAN_FUNCTION, plan_udtf(EndpointTasks.from_catalog(catalog)))
    with _embedded_lock:
        _registered[_app_id(spark)] = aq
    return aq


def registered(spark: SparkSession | None = None) -> SparkAIQuery:
    """The ai_query registration of ``spark`` (default: the active session), registering with
    the defaults (:func:`register`) on first use."""
    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        raise ConfigError("no active SparkSession: create one, or call register(spark) first")
    with _embedded_lock:
        aq = _registered.get(_app_id(spark))
    return aq if aq is not None and aq.spark is spark else register(spark)


def _app_id(spark: SparkSession) -> str:
    # The session's settings, not its SparkContext: a Spark Connect client has none.
    return str(spark.conf.get("spark.app.id"))


def run_sql(
    query: str,
    *,
    catalog: Catalog | str | Path | None = None,
    engine_url: str | Sequence[str] | None = None,
    read: str = "databricks",
    master: str = "local[*]",
) -> pa.Table:
    """Run ``query`` on Spark (``ai-query sql --engine spark``); the last statement's rows.

    Uses the active SparkSession, else starts a local one (and stops it, and any embedded
    engine server, before returning).
    """
    active = SparkSession.getActiveSession()
    spark = active or local_session(master)
    try:
        aq = register(spark, catalog, engine_url)
        return aq.sql(query, read=read).toArrow()
    finally:
        if active is None:
            spark.stop()
            stop_embedded_servers()


#: Settings of :func:`local_session`. In local mode the JVM shares the machine's cores with the
#: engine; HotSpot's optimising JIT (C2) compiling a new query's code paths took ~1.5 CPU-seconds
#: of a 16 s embeddings query on 2 cores, CPU the engine's threads lose. Stopping at C1 (quick
#: compiles, code fast enough for moving rows to and from the engine) halves the JVM's share.
LOCAL_SESSION_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
}


def local_session(
    master: str = "local[*]", app_name: str = "ai-query", conf: Mapping[str, str] | None = None
) -> SparkSession:
    """A quiet local SparkSession whose Python workers run this interpreter.

    Args:
        master: Spark's master URL (``local[N]``).
        app_name: the application's name.
        conf: Spark settings that take precedence over :data:`LOCAL_SESSION_CONF`.
    """
    # PySpark reads the workers' interpreter from this variable when it starts the context.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {**LOCAL_SESSION_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def embedded_server(catalog: Catalog, engine: EngineKind | str = EngineKind.VLLM) -> ServerProcess:
    """The driver's engine server for ``catalog``, started on first use (stopped at exit).

    Its models start when a batch first needs them, not before it listens: preloading every
    endpoint of the catalog ran an engine per endpoint (the bundled chat *and* embeddings
    models) in local mode, where the engine shares the driver's cores with Spark's JVM and
    Python workers. An idle vLLM engine is not free there (its process wakes ~1,300 times a
    second, holds its KV cache and took ~40 s of ``register``), and a query calls one or two
    endpoints, not the whole catalog.
    """
    engine = EngineKind.parse(engine, allowed=SERVER_ENGINE_KINDS)
    key = (json.dumps(catalog.to_data(), sort_keys=True), engine)
    with _embedded_lock:
        server = _embedded.get(key)
        if server is None or not server.alive():
            server = start_server_process(catalog, engine=engine, preload=False)
            _embedded[key] = server
        return server


def stop_embedded_servers() -> None:
    """Stop the engine servers the driver started."""
    with _embedded_lock:
        servers = list(_embedded.values())
        _embedded.clear()
    for server in servers:
        server.stop()


def _is_local(spark: SparkSession) -> bool:
    """Whether the session's driver runs on this machine in local mode (for Spark Connect: a
    local-mode server reached at a loopback address)."""
    try:
        master = spark.conf.get("spark.master") or ""
    except Exception:  # noqa: BLE001 - e.g. Spark Connect without the setting
        return False
    if is_connect(spark) and spark.client.host not in ("localhost", "127.0.0.1", "[::1]"):
        return False
    return master.startswith("local")
