"""The ``ai-query`` command line.

Commands: ``demo``, ``sql``, ``serve``, ``endpoints list``, ``jobs ...``, ``machine``. Errors
print one line on stderr and exit non-zero (1: the work failed, 2: bad usage); ``--debug`` shows
tracebacks.
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ai_query.jobs.cli import MaxCostOption, MaxTokensOption

app = typer.Typer(
    name="ai-query",
    help="Call chat and embedding models from SQL over whole tables (Databricks ai_query).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
endpoints_app = typer.Typer(help="Inspect the endpoint catalog.", no_args_is_help=True)
app.add_typer(endpoints_app, name="endpoints")

console = Console()
err_console = Console(stderr=True)
_state = {"debug": False, "console_script": False}

CatalogOption = Annotated[
    Path | None,
    typer.Option(
        "--catalog", "-c", help="Endpoint catalog file (YAML/JSON); default: bundled endpoints."
    ),
]


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and engine logs.")
    ] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.INFO if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def demo(
    rows: Annotated[int, typer.Option(help="How many sample reviews.")] = 100,
) -> None:
    """Run the sample job: summaries, structured sentiment and embeddings over product reviews."""
    from ai_query.demo import run_demo

    run_demo(console, rows=rows)


@app.command()
def sql(
    query: Annotated[
        str | None, typer.Argument(help="SQL text (Databricks dialect by default).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the SQL from a file.")
    ] = None,
    engine: Annotated[str, typer.Option(help="duckdb (default) or spark.")] = "duckdb",
    read_dialect: Annotated[
        str, typer.Option("--read-dialect", help="databricks, duckdb or spark.")
    ] = "databricks",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the result to .parquet/.csv/.json.")
    ] = None,
    database: Annotated[str, typer.Option(help="DuckDB database file.")] = ":memory:",
    catalog: CatalogOption = None,
    engine_url: Annotated[
        str | None, typer.Option(help="Engine server(s) grpc://host:port, comma separated.")
    ] = None,
    max_rows: Annotated[int, typer.Option(help="Rows to print.")] = 20,
    max_tokens: MaxTokensOption = None,
    max_cost: MaxCostOption = None,
) -> None:
    """Run SQL with ai_query(...) calls and print or save the result.

    With a budget (--max-tokens, --max-cost), a query whose estimate is over it is refused
    before it starts, and one that reaches it stops sending rows.
    """
    from ai_query.catalog import load_catalog
    from ai_query.display import arrow_table, explain_table, row_progress, write_table
    from ai_query.engine.core.budget import Budget
    from ai_query.errors import ConfigError
    from ai_query.sql.task_calls import explained_statement

    budget = Budget(max_tokens=max_tokens, max_cost=max_cost)

    if (query is None) == (file is None):
        raise typer.BadParameter("give the SQL as an argument or with --file, not both")
    text = query if query is not None else _read(file)
    # With engine servers and no --catalog, calls are checked against the servers' own catalog.
    cat = None if engine_url and not catalog else load_catalog(str(catalog) if catalog else None)
    if engine == "duckdb":
        table = _run_duckdb(text, read_dialect, cat, database, engine_url, budget)
    elif engine == "spark":
        if budget.limited:
            raise ConfigError("--max-tokens/--max-cost are for --engine duckdb")
        from ai_query.udf.spark import run_sql

        with row_progress(err_console, "ai_query", None):
            table = run_sql(text, catalog=cat, engine_url=engine_url, read=read_dialect)
    else:
        raise ConfigError(f"--engine must be duckdb or spark, got {engine!r}")
    if table is None:
        return
    if output is not None:
        write_table(table, output)
        err_console.print(f"wrote {table.num_rows} rows to {output}")
    elif engine == "duckdb" and explained_statement(text) is not None:
        console.print(explain_table(table))
    else:
        console.print(arrow_table(table, max_rows=max_rows))


def _run_duckdb(
    text: str, read: str, cat: Any, database: str, engine_url: str | None, budget: Any
) -> Any:
    from ai_query.engine.spec import EngineSpec, get_engine
    from ai_query.query_endpoints import start_early
    from ai_query.sql.task_calls import explained_statement
    from ai_query.timings import mark

    engine = get_engine(EngineSpec.for_urls(cat, engine_url))
    explained = explained_statement(text)
    if explained is None and not budget.limited:  # EXPLAIN, and a budget check, start no model
        # The private server and the query's models start now, before DuckDB is even imported.
        start_early(engine, [(text, read)])
    from ai_query.display import row_progress
    from ai_query.udf.duckdb import connect

    con = connect(database, engine=engine, budget=budget)
    try:
        if explained is not None:  # EXPLAIN of AI calls: what they would cost, no model call
            return con.explain(explained, read=read)
        # bad calls fail here, before any row runs; so does a query over its budget
        statement = con.prepare(text, read=read)
        mark("cli: query planned")
        with row_progress(err_console, "ai_query", None, spent=lambda: con.spent) as bar, \
                con.errors():
            con.progress.listeners.append(bar)
            relation = con.raw.sql(statement)
            table = relation.to_arrow_table() if relation is not None else None
        mark("cli: result")
        return table
    finally:
        con.close()


def _read(path: Path | None) -> str:
    from ai_query.errors import ConfigError

    assert path is not None
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


@app.command("spark-conf")
def spark_conf() -> None:
    """Print, on one line, the spark-submit / start-connect-server.sh flags that start Spark
    with ai_query's extension (typed results in plain spark.sql), building its jar if needed:
    `start-connect-server.sh $(ai-query spark-conf)`."""
    import shlex

    from ai_query.udf.spark.typed import spark_conf as flags

    print(shlex.join(flags()))


@app.command()
def machine(catalog: CatalogOption = None) -> None:
    """Print this machine (CPU flags, cores, memory, GPU) and the engine settings chosen from
    it for each local model of the catalog (its own engine_args included)."""
    from ai_query.catalog import load_catalog
    from ai_query.config import effective_vllm_environment
    from ai_query.engine.vllm.compat.shared_tails import SHARED_TAILS
    from ai_query.engine.vllm.model import engine_defaults
    from ai_query.machine import this_machine
    from ai_query.tasks import Task

    print(f"machine: {this_machine().describe()}")
    env = effective_vllm_environment()
    print("vLLM environment: " + ", ".join(
        f"{k}={env[k]}" for k in ("OMP_NUM_THREADS", "VLLM_CPU_KVCACHE_SPACE", "LD_PRELOAD")
        if k in env
    ))  # fmt: skip
    for ep in load_catalog(str(catalog) if catalog else None).endpoints():
        for entity in ep.config.served_entities:
            if entity.external_model is not None:
                continue
            kind = "pooling" if entity.resolved_task == Task.EMBEDDINGS else "generate"
            args = {**engine_defaults(kind), **entity.engine_args}
            args.pop("structured_outputs_config", None)
            connector = args.pop("kv_transfer_config", None)
            if connector is not None and connector != SHARED_TAILS:
                args["kv_transfer_config"] = connector
            shown = ", ".join(f"{k}={v}" for k, v in args.items() if k != "disable_log_stats")
            if kind == "generate":  # ai_query's own KV connector (rows share partial blocks)
                shown += f", shared tails {'on' if connector == SHARED_TAILS else 'off'}"
            print(f"{ep.name} ({entity.entity_name}): {shown}")


@endpoints_app.command("list")
def endpoints_list(catalog: CatalogOption = None) -> None:
    """List the catalog's endpoints and aliases."""
    from rich.table import Table

    from ai_query.catalog import load_catalog

    cat = load_catalog(str(catalog) if catalog else None)
    table = Table(title="Serving endpoints", header_style="bold")
    for col in ("name", "task", "served entities", "aliases"):
        table.add_column(col)
    aliases = cat.aliases()
    for ep in cat.endpoints():
        entities = ", ".join(
            (e.external_model.provider + ":" + e.external_model.name)
            if e.external_model
            else str(e.entity_name)
            for e in ep.config.served_entities
        )
        names = ", ".join(a for a, t in aliases.items() if t == ep.name)
        table.add_row(ep.name, ep.task, entities, names)
    console.print(table)


@app.command()
def serve(
    ctx: typer.Context,
    catalog: CatalogOption = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Arrow Flight port (0: any free port).")] = 8815,
    http_port: Annotated[
        int, typer.Option(help="HTTP port (OpenAI-compatible and Databricks APIs, web UI).")
    ] = 8000,
    no_http: Annotated[bool, typer.Option("--no-http", help="Serve Arrow Flight only.")] = False,
    jobs_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of job files whose run logs the web UI's Jobs page shows."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="An administrator's bearer token. Prefer the AI_QUERY_SERVER_TOKEN environment "
            "variable or --tokens-file: other users see a command line in the process list.",
            envvar="AI_QUERY_SERVER_TOKEN",
        ),
    ] = None,
    tokens_file: Annotated[
        Path | None,
        typer.Option(help="JSON/YAML file of bearer tokens -> principals (and their groups)."),
    ] = None,
    allow_external_base: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-external-base",
            help="An API base URL external models may use (repeatable); the catalog file's "
            "own bases are always allowed.",
        ),
    ] = None,
    allow_image_base: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-image-base",
            help="A URL prefix chat requests' image_url parts may name (repeatable); other "
            "images must come as data URLs.",
        ),
    ] = None,
    database: Annotated[
        Path | None,
        typer.Option(help="SQLite file for endpoints made over HTTP (default: in the cache dir)."),
    ] = None,
    inference_table: Annotated[
        Path | None, typer.Option(help="Directory for the inference table (Parquet); off if unset.")
    ] = None,
    preload: Annotated[
        str,
        typer.Option(help="Start models before listening: all, none, or endpoint names (a,b)."),
    ] = "all",
    warm: Annotated[
        str,
        typer.Option(
            help="Start models in the background once listening (rows that come first wait for "
            "them): all, none, or endpoint names (a,b)."
        ),
    ] = "none",
    default_max_tokens: Annotated[
        int, typer.Option(help="max_tokens of an HTTP request that sets none.")
    ] = 1024,
    log_level: Annotated[str, typer.Option(help="Level of the server's own logs.")] = "info",
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest HTTP request body in bytes (larger: 413).", min=1)
    ] = 16 * 1024 * 1024,
    sql_timeout: Annotated[
        float,
        typer.Option(help="Wall time of one web SQL editor query, in seconds (then stopped).",
                     min=0.1),
    ] = 120.0,
    sql_memory_mb: Annotated[
        int, typer.Option(help="DuckDB memory of one web SQL editor query, in MB.", min=16)
    ] = 512,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Allow a non-loopback --host with auth off (no tokens): anyone may call.",
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="What runs the local models: vllm, or deterministic (no model: answers made "
            "from the text, to try a pipeline; external models are still called)."
        ),
    ] = "vllm",
    engine_factory: Annotated[
        str | None,
        typer.Option(
            help="Serve your own Engine over Flight: module:callable, called with the catalog "
            "(literal keyword arguments allowed: 'pkg.mod:make(size=2)').",
        ),
    ] = None,
    # Hidden: for the launcher of private engine servers and for tests.
    rate_limit_period_scale: Annotated[float, typer.Option(hidden=True)] = 1.0,
    inference_flush_seconds: Annotated[float, typer.Option(hidden=True)] = 1.0,
    lifeline_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
    private_dir: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Host the catalog's models: HTTP for applications, Arrow Flight for SQL engines."""
    from ai_query.timings import mark

    mark("server: started")
    from ai_query.serving.options import ServeOptions

    chosen, warmed = _endpoint_choice(preload), _endpoint_choice(warm)
    options = ServeOptions(
        catalog=catalog,
        host=host,
        port=port,
        http_port=None if no_http else http_port,
        token=token,
        tokens_file=tokens_file,
        allow_external_bases=tuple(allow_external_base or ()),
        allow_image_bases=tuple(allow_image_base or ()),
        database=database,
        inference_table=inference_table,
        preload=chosen,
        warm=warmed,
        engine=engine,  # type: ignore[arg-type]  # text; ServeOptions reads it as a kind
        engine_factory=engine_factory,
        default_max_tokens=default_max_tokens,
        rate_limit_period_scale=rate_limit_period_scale,
        inference_flush_seconds=inference_flush_seconds,
        log_level=log_level,
        max_body_bytes=max_body_bytes,
        insecure=insecure,
        lifeline_fd=lifeline_fd,
        private_dir=private_dir,
    )
    if options.runs_vllm:
        _preload_machine_allocator()
        from ai_query.engine.vllm.setup import import_vllm_in_background

        # Seconds of imports, overlapped with everything the server does before a model starts.
        import_vllm_in_background()
    from ai_query.jobs.directory import directory_runs
    from ai_query.serving.http.ui_routes import UIServices
    from ai_query.serving.serve import run_server_cli
    from ai_query.sql_workspace import DuckDBWorkspace, WorkspaceLimits

    if token and _given_on_command_line(ctx, "token"):
        err_console.print(
            "warning: --token is visible to other users of this machine in the process list; "
            "set AI_QUERY_SERVER_TOKEN or use --tokens-file instead",
            highlight=False, markup=False, soft_wrap=True,
        )
    run_server_cli(
        options,
        ui=UIServices(
            sql_workspace=partial(
                DuckDBWorkspace,
                limits=WorkspaceLimits(timeout_s=sql_timeout, memory_mb=sql_memory_mb),
            ),
            job_runs=partial(directory_runs, jobs_dir) if jobs_dir is not None else None,
        ),
    )


def _preload_machine_allocator() -> None:
    """Run this ``ai-query serve`` again in its own process (``exec``: the same PID) with the
    machine's tcmalloc preloaded, where :func:`~ai_query.config.effective_vllm_environment` adds
    it and the process was started without it: the server's own engines (embeddings, the chat
    engine's front end) then run on it, as the engine processes it spawns do. Only when this
    process is the ``ai-query`` command, never when the CLI is called inside another program."""
    import os

    from ai_query.config import effective_vllm_environment

    preload = effective_vllm_environment().get("LD_PRELOAD")
    if not _state["console_script"] or not preload or preload == os.environ.get("LD_PRELOAD"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, {**os.environ, "LD_PRELOAD": preload})  # noqa: S606


def _endpoint_choice(value: str) -> bool | tuple[str, ...]:
    """``all`` -> True, ``none`` (or nothing) -> False, ``a,b`` -> those names."""
    if value == "all":
        return True
    return tuple(p for p in value.split(",") if p not in ("", "none")) or False


def _given_on_command_line(ctx: typer.Context, param: str) -> bool:
    """Whether the command's ``param`` came from argv (not the environment)."""
    source = ctx.get_parameter_source(param)
    return source is not None and source.name == "COMMANDLINE"


def _add_jobs() -> None:
    from ai_query.jobs.cli import jobs_app  # a missing jobs package is a bug, not a mode

    app.add_typer(jobs_app, name="jobs")


_add_jobs()


def main() -> None:
    """Entry point: run the CLI, turning errors into one line and an exit code."""
    from ai_query.errors import AIQueryError
    from ai_query.timings import mark

    mark("cli: imported")
    _state["console_script"] = True  # this process is the command (serve may exec itself)
    try:
        # Without standalone mode, click returns the code of a `typer.Exit` instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except (typer.BadParameter, typer.BadParameter.__mro__[1]) as exc:  # click.UsageError family
        err_console.print(
            f"error: {exc.format_message() if hasattr(exc, 'format_message') else exc}"
        )
        sys.exit(2)
    except (AIQueryError, OSError) as exc:
        _fail(exc)
    except Exception as exc:  # noqa: BLE001 - e.g. DuckDB's own errors: still one line
        _fail(exc)


def _fail(exc: BaseException) -> None:
    if _state["debug"]:
        raise exc
    from ai_query.text import one_line

    message = one_line(exc)  # a UDF's error is ours already (ai_query.udf.duckdb unwraps it)
    err_console.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
