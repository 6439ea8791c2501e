"""The job files of a folder and their newest runs: what the web UI's Jobs page shows.

The page shows the folder to people other than its owner, so it reads the folder as untrusted
and shows less than the CLI does (``ai-query jobs ...`` runs on the owner's own machine and
keeps its full messages). Every rule is applied here, in :func:`directory_runs`:

- **Job files only.** A ``.toml``/``.yaml``/``.yml`` file is a job file when it parses to a
  mapping with a top-level ``name`` (the one key every job has). Any other file there (a tokens
  file, a catalog) is listed as "not a job file" and nothing else of it is shown.
- **Errors without contents.** A job file that does not load shows its problems in the
  schema's own terms: field paths made of the schema's field names (an input by its position,
  ``inputs[2].path``), the rule broken, how many unknown fields there are, the line and column
  of a parse error. Never a key the schema does not know, never a value from the file.
- **Nothing outside the folder.** Every path a job names or implies (inputs, output, database,
  catalog, cache, ``sql_file``, ``state_dir`` and its default), after ``~``, ``..`` and symlinks
  are resolved, must lie inside the folder; a job naming one outside is shown with an error
  naming the field, and nothing outside is opened. A job file or run log that is a link to
  outside the folder is not read.
- **Read-only.** Run logs are read with :func:`~ai_query.jobs.runlog.read_runs`, which creates
  no file (no ``-wal``/``-shm``) and takes no write lock.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ai_query.datafile import read_data_file
from ai_query.errors import JobError
from ai_query.jobs.runlog import read_runs, record_dict
from ai_query.jobs.spec import (
    RULE_ERROR,
    InputSpec,
    JobSpec,
    OutputSpec,
    read_sql,
    resolve_paths,
    sql_problem,
)

#: The job file endings :func:`~ai_query.jobs.spec.load_job` reads.
JOB_SUFFIXES = (".toml", ".yaml", ".yml")
#: What the page says of a file in the folder that is not a job file.
NOT_A_JOB = "not a job file (a job file's top level has `name`): not shown"
#: pydantic error types whose message names only the schema (never the input).
_SCHEMA_MESSAGES = frozenset(
    {
        "missing",
        "string_type",
        "string_pattern_mismatch",
        "string_too_long",
        "string_too_short",
        "literal_error",
        "dict_type",
        "list_type",
        "model_type",
        "model_attributes_type",
        "too_short",
        "too_long",
        "int_type",
        "int_parsing",
        "int_from_float",
        "greater_than_equal",
        "less_than_equal",
        "bool_type",
        "bool_parsing",
    }
)
_TOML_WHERE = re.compile(r"\(at line (\d+), column (\d+)\)")


def directory_runs(folder: Path, limit: int = 20) -> list[dict[str, Any]]:
    """Each ``.toml``/``.yaml``/``.yml`` file in ``folder``, by name, under the rules of the module
    docstring.

    Each entry has ``file`` and ``runs`` (newest first, at most ``limit``) and one of: the job's
    ``job``, ``mode``, ``output`` and ``schedule`` (plus ``error`` if its run log cannot be
    read); ``error`` alone (a job file that does not load, or names a path outside the folder);
    ``skipped`` (:data:`NOT_A_JOB`).

    Args:
        folder: the jobs directory.
        limit: most runs per job.
    """
    root = folder.resolve()
    out: list[dict[str, Any]] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in JOB_SUFFIXES):
        entry: dict[str, Any] = {"file": path.name, "runs": []}
        if not _inside(path, root):
            entry["error"] = "a link to outside the jobs folder: not read"
        elif path.is_file():
            entry.update(_job_entry(path, root, limit))
        else:
            continue
        out.append(entry)
    return out


def _job_entry(path: Path, root: Path, limit: int) -> dict[str, Any]:
    """The page's view of one file (inside the folder): the job and its runs, or why not."""
    try:
        data = read_data_file(path, "job file", JobError, show_parse_error=False)
    except JobError as exc:  # its message may quote the file: say where, not what
        return {"error": _parse_problem(path, exc.__cause__)}
    except ValueError:  # not text (UnicodeDecodeError): its message quotes bytes
        return {"error": "cannot be read as text"}
    if not isinstance(data, dict) or "name" not in data:
        return {"skipped": NOT_A_JOB}
    try:
        job = JobSpec.model_validate(data)
    except ValidationError as exc:
        return {"error": _validation_problems(exc, data)}
    except ValueError:  # a validator's own ValueError outside pydantic's wrapping
        return {"error": "not a valid job file"}
    job = resolve_paths(job, path.resolve().parent)  # as load_job resolves them
    outside = [field for field, p in _named_paths(job) if not _inside(Path(p), root)]
    if outside:
        return {
            "error": "paths outside the jobs folder (the Jobs page opens nothing outside "
            f"it): {', '.join(outside)}"
        }
    try:
        job = job.model_copy(update={"sql": read_sql(job), "sql_file": None})
    except OSError:
        return {"error": "sql_file: cannot be read"}
    problem = sql_problem(job)
    if problem is not None:
        return {"error": problem.public}
    entry: dict[str, Any] = {
        "job": job.name,
        "mode": job.mode,
        "output": _label(job, root),
        "schedule": job.schedule,
    }
    log_path = Path(str(job.state_dir)) / "runs.sqlite"
    if not _inside(log_path, root):
        entry["error"] = "the run log is a link to outside the jobs folder: not read"
    elif log_path.is_file():
        try:
            entry["runs"] = [record_dict(r) for r in read_runs(log_path.resolve(), limit)]
        except sqlite3.Error:
            entry["error"] = "the run log cannot be read"
    return entry


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with ``..`` and symlinks resolved, lies in ``root`` (resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _named_paths(job: JobSpec) -> list[tuple[str, str]]:
    """(field, path) of every path a job (with :func:`resolve_paths` applied) names."""
    named = [(f"inputs[{i}].path", spec.path) for i, spec in enumerate(job.inputs.values(), 1)]
    named += [
        ("output.path", job.output.path),
        ("database", job.database),
        ("catalog", job.catalog),
        ("cache_path", job.cache_path),
        ("sql_file", job.sql_file),
        ("state_dir", job.state_dir),
    ]
    return [(field, p) for field, p in named if p is not None]


def _label(job: JobSpec, root: Path) -> str:
    """The job's output as people write it, a path relative to the jobs folder."""
    if job.output.path is None:
        return job.output.label
    relative = Path(job.output.path).resolve().relative_to(root)
    return f"{job.output.format} {relative}"


def _parse_problem(path: Path, cause: BaseException | None) -> str:
    """A parse error as the kind of file and where it broke (never the parser's message, which
    quotes the offending text)."""
    if isinstance(cause, OSError):
        return "cannot be read"
    kind = "TOML" if path.suffix.lower() == ".toml" else "YAML"
    mark = getattr(cause, "problem_mark", None) or getattr(cause, "context_mark", None)
    if mark is not None:  # PyYAML's marks count from 0
        return f"does not parse as {kind} (line {mark.line + 1}, column {mark.column + 1})"
    found = _TOML_WHERE.search(str(cause)) if cause is not None else None
    if found is not None:
        return f"does not parse as {kind} (line {found[1]}, column {found[2]})"
    return f"does not parse as {kind}"


def _validation_problems(exc: ValidationError, data: dict[str, Any]) -> str:
    """pydantic's errors in the schema's terms: each field path and rule, unknown fields
    counted (their names are the file's, not the schema's)."""
    problems: list[str] = []
    unknown: dict[str, int] = {}
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            where = _where(err["loc"][:-1], data)
            unknown[where] = unknown.get(where, 0) + 1
            continue
        if err["type"] == RULE_ERROR:
            message = str((err.get("ctx") or {}).get("public", "not valid"))
        elif err["type"] in _SCHEMA_MESSAGES:
            message = err["msg"]
        else:
            message = "not valid"
        where = _where(err["loc"], data)
        problems.append(f"field `{where}`: {message}" if where else message)
    for where, count in sorted(unknown.items()):
        problems.append(
            f"unknown field(s) in `{where}`: {count}" if where else f"unknown field(s): {count}"
        )
    return "; ".join(problems)


def _where(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """A pydantic location in the schema's names: an input's own name becomes its position,
    and the path stops at the first part the schema does not name."""
    parts: list[str] = []
    level = "job"  # what the next part indexes: a model (_MODELS), "inputs" or "key"
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue  # pydantic's validator wrappers, not a place in the file
        if level == "inputs":  # part is an input's name: a key the file chose
            names = list(data["inputs"]) if isinstance(data.get("inputs"), dict) else []
            parts.append(f"[{names.index(part) + 1}]" if part in names else "[?]")
            level = "input"
        elif level == "key" and isinstance(part, int):
            parts.append(f"[{part + 1}]")
            level = ""
        elif level in _MODELS and isinstance(part, str) and part in _MODELS[level].model_fields:
            parts.append(f".{part}" if parts else part)
            level = part if level == "job" else ""
        else:
            break
    return "".join(parts)


#: The models a location's parts may name fields of.
_MODELS: dict[str, type[BaseModel]] = {"job": JobSpec, "input": InputSpec, "output": OutputSpec}
