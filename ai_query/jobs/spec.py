"""The job file: what a batch job reads, runs and writes, validated once at load.

A job file is TOML (``.toml``) or YAML (``.yaml``/``.yml``)::

    name = "review_sentiment"
    sql = '''
    SELECT id, ai_query('smollm2-135m-instruct', concat('Sentiment: ', review),
                        failOnError => false) AS sentiment
    FROM reviews'''
    key = ["id"]
    mode = "incremental"              # overwrite (default) | append | incremental
    schedule = "0 2 * * *"            # optional cron expression
    max_rows_per_batch = 1024
    max_tokens = 2_000_000            # optional budget of one run (also max_cost)

    [inputs]
    reviews = "data/reviews.parquet"  # Parquet/CSV/JSON path or glob, or {table = "..."}

    [output]
    path = "out/review_sentiment"     # a Parquet directory; or table = "..."; or format = "delta"

**The driving input.** The job runs its SQL once per batch of rows of one input, the *driving
input*: ``input`` names it, and it may be left out when there is only one input. While a batch
runs, the driving input's name holds just that batch's rows; every other input is read whole
(lookup tables). Each driving row is identified by its ``key`` columns (unique, not NULL), and
the SQL must select those key columns unchanged, one output row per driving row at most
(a WHERE clause may drop rows). Relative paths are relative to the job file's directory.

**Budgets.** ``max_tokens`` / ``max_cost`` (or ``ai-query jobs run --max-tokens``) limit one
run. A run that reaches its budget stops sending rows and fails with the budget error; its
committed batches stay staged, and the answers it got are in the result cache. Run it again
with a higher budget: it resumes where it stopped, and nothing is answered twice. Budgets are
not part of the job's fingerprint, so raising one keeps what was done.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ai_query.datafile import read_data_file
from ai_query.errors import JobError

#: File suffixes read as Parquet, CSV and JSON inputs.
INPUT_FORMATS: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: The pydantic error ``type`` of a job rule's own validators; its ``ctx["public"]`` says what
#: the rule wants with no value from the file (what the web UI's Jobs page shows).
RULE_ERROR = "job_rule"


class JobProblem(NamedTuple):
    """One thing wrong with a job file, told twice."""

    public: str
    """In the schema's terms only, no value from the file (the web UI's Jobs page)."""
    full: str
    """With the file's own values (the job's owner reads it in the CLI)."""


def _broken_rule(public: str, full: str | None = None) -> PydanticCustomError:
    """A validator's error: ``full`` (default ``public``) is the message; ``public`` rides along
    in its context (see :data:`RULE_ERROR`)."""
    return PydanticCustomError(RULE_ERROR, "{full}", {"full": full or public, "public": public})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """One input of a job: files (Parquet, CSV, JSON) or a table."""

    path: str | None = None
    """A file, a glob or a directory of files (absolute once loaded)."""
    format: Literal["parquet", "csv", "json"] | None = None
    """File format; default: from the path's suffix (a directory is read as Parquet)."""
    table: str | None = None
    """A table name: in ``database`` (DuckDB) or in the Spark catalog."""

    @model_validator(mode="after")
    def _one_source(self) -> InputSpec:
        if (self.path is None) == (self.table is None):
            raise _broken_rule("give exactly one of path or table")
        return self

    @property
    def file_format(self) -> str:
        """The format files are read in."""
        if self.format is not None:
            return self.format
        suffix = Path(str(self.path).rstrip("*/")).suffix.lower()
        return INPUT_FORMATS.get(suffix, "parquet")


class OutputSpec(_Strict):
    """Where a job's result goes: a Parquet directory, a Delta table, or a table."""

    path: str | None = None
    """Directory written as Parquet (or Delta with ``format = "delta"``)."""
    table: str | None = None
    """A table in ``database`` (engine duckdb)."""
    format: Literal["parquet", "delta"] = "parquet"
    """Format of a path output; ``delta`` needs ``engine = "spark"``."""

    @model_validator(mode="after")
    def _one_target(self) -> OutputSpec:
        if (self.path is None) == (self.table is None):
            raise _broken_rule("give exactly one of path or table")
        if self.table is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", self.table):
            raise _broken_rule(
                "`table` must be a plain (schema.)table name",
                f"table name {self.table!r} is not a plain (schema.)table name",
            )
        return self

    @property
    def label(self) -> str:
        """The output as people write it."""
        return f"table {self.table}" if self.table else f"{self.format} {self.path}"


class JobSpec(_Strict):
    """A validated job file (see the module docstring)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    """Job name (run log, lock and state names)."""
    sql: str | None = None
    """The query, one SELECT statement; or give ``sql_file``."""
    sql_file: str | None = None
    """File holding the query (read at load)."""
    dialect: Literal["databricks", "spark", "duckdb"] = "databricks"
    """Dialect the SQL is written in."""
    engine: Literal["duckdb", "spark"] = "duckdb"
    """SQL engine that runs the job."""
    inputs: dict[str, InputSpec] = Field(min_length=1)
    """Input name (as the SQL reads it) -> files or table; a plain string is a path."""
    input: str | None = None
    """The driving input (see the module docstring); default: the only input."""
    key: list[str] = Field(min_length=1)
    """Columns of the driving input that identify a row."""
    output: OutputSpec
    """Where the result goes; a plain string is a Parquet directory path."""
    mode: Literal["overwrite", "append", "incremental"] = "overwrite"
    """overwrite: the output is this run's rows; append: add them; incremental: re-run only
    new or changed rows and keep the output the full, up-to-date table."""
    schedule: str | None = None
    """Cron expression for ``ai-query jobs schedule`` (5 fields, or 6 with seconds first)."""
    catalog: str | None = None
    """Endpoint catalog file; default: ``AI_QUERY_CATALOG`` or the bundled endpoints."""
    database: str | None = None
    """DuckDB database file holding table inputs and table outputs."""
    max_rows_per_batch: int = Field(default=1024, ge=1, le=1_000_000)
    """Rows per committed batch: bigger keeps the engine busier, smaller loses less on a kill."""
    cache: bool = True
    """Answer repeated deterministic requests from the result cache."""
    max_tokens: int | None = Field(default=None, ge=0)
    """Budget of one run: the most tokens (prompt + output) it may spend; a run that reaches it
    stops, keeping its committed batches, and the next run resumes (see ``budget``)."""
    max_cost: float | None = Field(default=None, ge=0)
    """Budget of one run in money, at the endpoints' catalog prices."""
    cache_path: str | None = None
    """Result cache file; default: ``cache.sqlite`` in ``state_dir`` (share one across jobs)."""
    state_dir: str | None = None
    """Staging, fingerprints, run log and lock; default: ``<output path>.ai_query`` or
    ``<database>.ai_query/<name>``, or ``.ai_query/<name>`` beside the job file."""

    @model_validator(mode="before")
    @classmethod
    def _loose_forms(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        inputs = data.get("inputs")
        if isinstance(inputs, dict):
            data["inputs"] = {
                k: {"path": v} if isinstance(v, str) else v for k, v in inputs.items()
            }
        if isinstance(data.get("output"), str):
            data["output"] = {"path": data["output"]}
        if isinstance(data.get("key"), str):
            data["key"] = [data["key"]]
        return data

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, InputSpec]) -> dict[str, InputSpec]:
        for name in value:
            if not re.match(_NAME, name):
                raise _broken_rule(
                    "input names must be plain SQL identifiers",
                    f"input name {name!r} must be a plain SQL identifier",
                )
        return value

    @field_validator("key")
    @classmethod
    def _key_names(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise _broken_rule("key columns repeat", f"key columns repeat: {value}")
        if any(k.startswith("__aiq") for k in value):
            raise _broken_rule("key column names may not start with __aiq")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from ai_query.jobs.schedule import cron_trigger

            try:
                cron_trigger(value)
            except ValueError as exc:  # names the expression: for the owner's eyes only
                raise _broken_rule(
                    "not a cron expression (5 fields, or 6 with seconds first)", str(exc)
                ) from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if (self.sql is None) == (self.sql_file is None):
            raise _broken_rule("give exactly one of sql or sql_file")
        if self.input is None and len(self.inputs) > 1:
            raise _broken_rule(
                "several inputs: set `input` to the driving one",
                f"several inputs ({', '.join(self.inputs)}): set `input` to the driving one",
            )
        if self.input is not None and self.input not in self.inputs:
            raise _broken_rule(
                "`input` is not one of `inputs`",
                f"input {self.input!r} is not one of inputs {sorted(self.inputs)}",
            )
        if self.output.format == "delta" and self.engine != "spark":
            raise _broken_rule("output.format delta needs engine = 'spark'")
        if self.output.table is not None and self.engine == "spark":
            raise _broken_rule("output.table is for engine duckdb; on spark give output.path")
        if self.engine == "duckdb":
            tables = [n for n, i in self.inputs.items() if i.table is not None]
            if (tables or self.output.table) and self.database is None:
                raise _broken_rule("table inputs/outputs on engine duckdb need `database`")
        return self

    @property
    def driving_input(self) -> str:
        """Name of the input whose rows the job batches over."""
        return self.input or next(iter(self.inputs))

    @property
    def query(self) -> str:
        """The SQL text (``sql_file`` is read into ``sql`` at load)."""
        return self.sql or ""

    def fingerprint(self) -> str:
        """Hash of everything that decides the answers: a change re-runs every row."""
        data = self.model_dump(
            include={"sql", "dialect", "engine", "inputs", "input", "key", "catalog"}
        )
        catalog_text = ""
        if self.catalog:
            try:
                catalog_text = Path(self.catalog).read_text()
            except OSError:
                catalog_text = self.catalog
        blob = json.dumps(data, sort_keys=True, default=str) + catalog_text
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job file; relative paths become relative to its directory.

    Raises:
        JobError: naming the file and the offending field.
    """
    path = Path(path)
    if path.suffix.lower() not in (".toml", ".yaml", ".yml"):
        raise JobError(f"job file {path} must end in .toml, .yaml or .yml")
    data = read_data_file(path, "job file", JobError)
    return job_from_data(data, base_dir=path.resolve().parent, source=str(path))


def job_from_data(data: Any, *, base_dir: Path, source: str = "job") -> JobSpec:
    """Validate parsed job data and resolve its paths against ``base_dir``.

    Raises:
        JobError: naming the offending field (e.g. ``job.toml: output.path: ...``).
    """
    if not isinstance(data, dict):
        raise JobError(f"{source}: expected a mapping of job fields")
    try:
        job = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise JobError(f"{source}: {describe_validation(exc)}") from exc
    except ValueError as exc:  # a validator's own ValueError outside pydantic's wrapping
        raise JobError(f"{source}: {exc}") from exc
    return _resolved(job, base_dir, source)


def _resolved(job: JobSpec, base: Path, source: str) -> JobSpec:
    job = resolve_paths(job, base)
    try:
        sql = read_sql(job)
    except OSError as exc:
        raise JobError(f"{source}: sql_file: cannot read {job.sql_file}: {exc.strerror}") from exc
    resolved = job.model_copy(update={"sql": sql, "sql_file": None})
    problem = sql_problem(resolved)
    if problem is not None:
        raise JobError(f"{source}: {problem.full}")
    return resolved


def resolve_paths(job: JobSpec, base: Path) -> JobSpec:
    """``job`` with every path it names absolute (relative ones against ``base``) and its
    default ``state_dir`` filled in; reads nothing."""

    def absolute(value: str | None) -> str | None:
        if value is None:
            return None
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)

    inputs = {n: i.model_copy(update={"path": absolute(i.path)}) for n, i in job.inputs.items()}
    output = job.output.model_copy(update={"path": absolute(job.output.path)})
    database = absolute(job.database)
    state = absolute(job.state_dir)
    if state is None:
        if output.path is not None:
            state = output.path.rstrip("/") + ".ai_query"
        elif database is not None:
            state = str(Path(database).parent / f"{Path(database).name}.ai_query" / job.name)
        else:
            state = str(base / ".ai_query" / job.name)
    update = {
        "sql_file": absolute(job.sql_file),
        "inputs": inputs,
        "output": output,
        "database": database,
        "catalog": absolute(job.catalog),
        "cache_path": absolute(job.cache_path),
        "state_dir": state,
    }
    return job.model_copy(update=update)


def read_sql(job: JobSpec) -> str:
    """The job's SQL text: ``sql``, or the file ``sql_file`` names (resolved by
    :func:`resolve_paths`).

    Raises:
        OSError: when ``sql_file`` cannot be read.
    """
    if job.sql_file is None:
        return job.query
    return Path(job.sql_file).read_text()


def sql_problem(job: JobSpec) -> JobProblem | None:
    """What is wrong with the job's SQL (read into ``sql``): it must parse, be one query and
    read the driving input; None when nothing is."""
    from sqlglot import exp

    from ai_query.errors import SQLParseError
    from ai_query.sql.transpile import parse_sql

    try:
        trees = parse_sql(job.query, job.dialect)
    except SQLParseError as exc:
        where = f" (line {exc.line}, column {exc.col})" if exc.line is not None else ""
        return JobProblem(f"sql: does not parse{where}", f"sql: {exc}")
    if len(trees) != 1 or not isinstance(trees[0], exp.Query):
        return JobProblem(*["sql: must be exactly one SELECT query"] * 2)
    tables = {t.name.lower() for t in trees[0].find_all(exp.Table)}
    if job.driving_input.lower() not in tables:
        return JobProblem(
            "sql: does not read the driving input",
            f"sql: does not read the driving input {job.driving_input!r} "
            f"(it reads {sorted(tables) or 'no table'})",
        )
    return None


def describe_validation(exc: ValidationError) -> str:
    """Pydantic errors as ``field.path: message`` parts."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)
