"""Typed results inside Spark's own analyzer: plain ``spark.sql``, ``selectExpr``, ``F.expr``,
views, CTEs and ``INSERT ... SELECT`` return the types Databricks gives.

A Python UDF's result type is fixed when it is registered, but ai_query's depends on its
constant arguments (``returnType``, ``responseFormat``, ``failOnError``, the endpoint's task),
and so do those of :data:`FUNCTIONS`. ai_query's Spark extension, the Java class
:data:`EXTENSION_CLASS` (source in ``java/``, compiled by :func:`jar_path` against the installed
pyspark), gives each of them a builder in the session's function registry. When the analyzer
resolves a call, the builder asks this session's planning UDTF (:data:`PLAN_FUNCTION`, made by
:func:`plan_udtf`) what the call returns: its ``analyze`` step runs in a Python worker with the
call's constant arguments and applies :func:`ai_query.sql.transpile.typed_result`, the rules
DuckDB's calls follow (:func:`plan_call`). The builder then wraps the hidden string UDF that
answers the rows (:func:`hidden_name`) in ``from_json(<call>, '<ddl>')``, or calls the vector
UDF for a plain embeddings call. A bad call fails at analysis, before any task runs, with the
message DuckDB gives.

A session gets the builders one of two ways:

- started with the extension: ``spark-submit $(ai-query spark-conf) ...``,
  ``start-connect-server.sh $(ai-query spark-conf)`` or ``spark.sql.extensions`` in the
  builder (:func:`spark_conf`);
- a running classic session (``SparkSession.builder...getOrCreate()``):
  :func:`install_builders`, which :func:`~ai_query.udf.spark.register` calls, adds the jar to
  the driver and registers the builders there.

A Spark Connect client cannot reach the server's JVM: without the extension on the server,
``register`` warns once and the functions return text, as a plain UDF does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlglot import exp

from ai_query.catalog import Catalog
from ai_query.errors import AIQueryError, ConfigError, UnknownEndpointError
from ai_query.sql.calls import FUNCTION_NAME, PARAMETERS, VECTOR_FUNCTION_NAME
from ai_query.sql.transpile import spark_json_ddl, typed_result
from ai_query.tasks import Task

#: The functions whose result type depends on their constant arguments (the Java class's
#: ``FUNCTIONS``; a test checks that the two agree).
FUNCTIONS: tuple[str, ...] = ("ai_query", "ai_analyze_sentiment", "ai_classify", "ai_extract")
#: The Python UDTF whose ``analyze`` step plans a call for the Java builders.
PLAN_FUNCTION = "__ai_query_plan"
#: The extension (``spark.sql.extensions``); also registers the builders on a running session.
EXTENSION_CLASS = "aiquery.spark.AiQueryExtension"
_SOURCE_DIR = Path(__file__).parent / "java"
_warned: set[str] = set()


@dataclass(frozen=True)
class EndpointTasks:
    """Each endpoint name's task and nothing else (no models, no secrets): what checking a
    call needs, small and picklable (the planning UDTF carries it to Spark's workers)."""

    tasks: Mapping[str, Task]
    """Endpoint or alias name -> task."""

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> EndpointTasks:
        """Each of ``catalog``'s names with its task."""
        return cls({name: catalog.task_of(name) for name in catalog.names()})

    def task_of(self, name: str) -> Task:
        """The task of endpoint ``name``; raises UnknownEndpointError when unknown."""
        if name not in self.tasks:
            raise UnknownEndpointError(name, list(self.tasks))
        return self.tasks[name]


def hidden_name(function: str) -> str:
    """The name of the string UDF that answers the rows of ``function`` behind its builder."""
    return f"__{function}_text"


# --- planning (runs in the planning UDTF's analyze step, a Python worker) ----------------------
def plan_call(
    function: str, args: Sequence[Any], kwargs: Mapping[str, Any], tasks: EndpointTasks
) -> dict[str, Any]:
    """What Spark makes of one call of ``function``, from its arguments as the analyzer gives
    them (``pyspark.sql.udtf.AnalyzeArgument``: ``value`` for constants).

    Returns:
        ``{"mode": "text"}``: the string UDF's answer as is; ``{"mode": "json", "ddl": d}``:
        ``from_json(<answer>, d)``; ``{"mode": "json_scalar", "ddl": d}``: the one element of
        ``from_json('[' || <answer> || ']', d)``; ``{"mode": "vector", "function": f, "args":
        [i, j]}``: ``f(<argument i>, <argument j>)`` (a plain embeddings call); or
        ``{"error": message}``.
    """
    positional = [_sql_value(arg, f"argument {i + 1}") for i, arg in enumerate(args)]
    named = [
        exp.Kwarg(this=exp.var(key), expression=_sql_value(arg, key)) for key, arg in kwargs.items()
    ]
    node = exp.Anonymous(this=function, expressions=[*positional, *named])
    try:
        typ = typed_result(node, tasks)
    except AIQueryError as exc:
        return {"error": str(exc)}
    if typ is None:
        where = {**{PARAMETERS[i]: i for i in range(len(args))}, **{
            key.lower(): len(args) + j for j, key in enumerate(kwargs)
        }}
        return {
            "mode": "vector", "function": VECTOR_FUNCTION_NAME,
            "args": [where["endpoint"], where["request"]],
        }
    if typ.is_string or (function != FUNCTION_NAME and typ.kind not in ("STRUCT", "ARRAY")):
        return {"mode": "text"}
    ddl, scalar = spark_json_ddl(typ)
    return {"mode": "json_scalar" if scalar else "json", "ddl": ddl}


def _sql_value(arg: Any, name: str) -> exp.Expression:
    """An argument as the SQL node the call binders read: its constant, or a column."""
    if not getattr(arg, "isConstantExpression", False):
        return exp.column(name.replace(" ", "_"))
    return _literal(arg.value)


def _literal(value: Any) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float, Decimal)):
        return exp.Literal.number(value)
    if isinstance(value, str):
        return exp.Literal.string(value)
    if hasattr(value, "asDict"):  # a Row: named_struct(...)
        pairs: list[exp.Expression] = []
        for key, item in value.asDict().items():
            pairs += [exp.Literal.string(key), _literal(item)]
        return exp.Anonymous(this="named_struct", expressions=pairs)
    if isinstance(value, Mapping):
        return exp.VarMap(
            keys=exp.Array(expressions=[_literal(k) for k in value]),
            values=exp.Array(expressions=[_literal(v) for v in value.values()]),
        )
    if isinstance(value, (list, tuple)):
        return exp.Array(expressions=[_literal(item) for item in value])
    return exp.Literal.string(str(value))


def plan_udtf(tasks: EndpointTasks) -> Any:
    """The planning UDTF, carrying each endpoint's task (registered as :data:`PLAN_FUNCTION`;
    the builders only run its ``analyze``, never its rows)."""
    from pyspark.sql.functions import udtf
    from pyspark.sql.types import StringType, StructField, StructType
    from pyspark.sql.udtf import AnalyzeResult

    class AIQueryPlan:
        @staticmethod
        def analyze(function: Any, *args: Any, **kwargs: Any) -> AnalyzeResult:
            plan = plan_call(str(function.value), args, kwargs, tasks)
            field = StructField("plan", StringType(), metadata=plan)
            return AnalyzeResult(StructType([field]))

        def eval(self, *args: Any, **kwargs: Any) -> Any:
            yield (None,)

    return udtf(AIQueryPlan)


# --- the jar -----------------------------------------------------------------------------------
def jar_path() -> Path:
    """The extension's jar for the installed pyspark, compiled on first use (``javac``
    against pyspark's own jars; ``scripts/setup.sh`` builds it at install).

    Raises:
        ConfigError: no ``javac`` (a JDK is needed), or the source does not compile.
    """
    try:
        import pyspark
    except ImportError:
        raise ConfigError(
            "pyspark is not installed: pip install 'ai-query-sql[spark]'"
        ) from None
    sources = sorted(_SOURCE_DIR.rglob("*.java"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    name = f"ai-query-spark-{pyspark.__version__}-{digest}.jar"
    for folder in _jar_dirs():
        if (folder / name).is_file():
            return folder / name
    javac = shutil.which("javac")
    if javac is None:
        raise ConfigError(
            "typed results in plain spark.sql need ai_query's Spark extension, which is "
            "compiled with a JDK's javac: install a JDK (17+) so javac is on PATH"
        )
    classpath = str(Path(pyspark.__file__).parent / "jars" / "*")
    with tempfile.TemporaryDirectory(prefix="ai-query-jar-") as tmp:
        done = subprocess.run(  # noqa: S603 - javac from PATH, our own sources
            [javac, "-nowarn", "-d", tmp, "-cp", classpath, *map(str, sources)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise ConfigError(
                f"ai_query's Spark extension does not compile against pyspark "
                f"{pyspark.__version__}: {done.stderr.strip()[-2000:]}"
            )
        return _write_jar(Path(tmp), name)


def _jar_dirs() -> list[Path]:
    """Where jars go: beside the package (shipped in it), else the user's cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ai_query" / "jars"
    return [Path(__file__).parent / "jars", cache]


def _write_jar(classes: Path, name: str) -> Path:
    """Zip ``classes`` into the first writable jar folder, atomically."""
    for folder in _jar_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
        except OSError:
            continue
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(out, "w") as jar:
            for path in sorted(classes.rglob("*.class")):
                jar.write(path, path.relative_to(classes).as_posix())
        os.replace(tmp, folder / name)
        return folder / name
    raise ConfigError(f"no writable folder for ai_query's Spark extension: {_jar_dirs()}")


def spark_conf() -> list[str]:
    """``spark-submit``/``start-connect-server.sh`` arguments that start Spark with the
    extension (and Python workers running this interpreter, where ai_query is installed)."""
    return [
        "--jars", str(jar_path()),
        "--conf", f"spark.sql.extensions={EXTENSION_CLASS}",
        "--conf", f"spark.pyspark.python={sys.executable}",
    ]


# --- installing the builders ---------------------------------------------------------------------
def install_builders(spark: Any) -> bool:
    """Make :data:`FUNCTIONS` typed in ``spark``; False (with one warning) where it cannot.

    A session started with the extension has them already. A running classic session gets
    the jar on its driver and the builders in its function registry. A Spark Connect client
    cannot change the server's JVM: its server must be started with :func:`spark_conf`.
    """
    if EXTENSION_CLASS in _extensions(spark):
        return True
    if is_connect(spark):
        _warn_once(
            "connect",
            "this Spark Connect server was not started with ai_query's extension, so "
            "ai_query and the task functions return text in spark.sql: start it with "
            "`start-connect-server.sh $(ai-query spark-conf)`",
        )
        return False
    try:
        jar = jar_path()
        jsession = spark._jsparkSession
        jsession.sessionState().resourceLoader().addJar(str(jar))
        loader = jsession.sharedState().jarClassLoader()
        cls = spark._jvm.java.lang.Class.forName(EXTENSION_CLASS, True, loader)
        gateway = spark.sparkContext._gateway
        make = cls.getDeclaredConstructor(gateway.new_array(spark._jvm.java.lang.Class, 0))
        make.newInstance(gateway.new_array(spark._jvm.java.lang.Object, 0)).register(jsession)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the text UDFs working
        _warn_once(
            "install",
            f"ai_query's Spark extension could not be installed on this session ({exc}); "
            "ai_query and the task functions return text in spark.sql (aq.sql still types "
            "them). Start Spark with `$(ai-query spark-conf)` instead",
        )
        return False
    return True


def _extensions(spark: Any) -> list[str]:
    try:
        value = spark.conf.get("spark.sql.extensions", None) or ""
    except Exception:  # noqa: BLE001 - a Connect server that refuses to say
        return []
    return [item.strip() for item in str(value).split(",")]


def is_connect(spark: Any) -> bool:
    """Whether ``spark`` is a Spark Connect client session (no JVM on this side)."""
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:  # the Connect client's dependencies are not installed
        return False
    return isinstance(spark, ConnectSession)


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

