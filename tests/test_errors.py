"""The error tree (ai_query/errors.py): every exception the package raises is in it.

The source is walked, not imported: each ``raise`` of a builtin exception must be a listed,
internal one (caught by its caller, a protocol's own signal, or a programmer error), and each
exception class the package defines must descend from :class:`~ai_query.errors.AIQueryError`
unless it is listed as private control flow.
"""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import pytest

import ai_query.errors as errors_module
from ai_query.errors import AIQueryError

PACKAGE = Path(__file__).resolve().parents[1] / "ai_query"

#: Builtin exceptions the package may raise, by file, and why none of them reaches a user as
#: such. A new bare ``raise ValueError(...)`` fails the walk: raise a tree error instead.
INTERNAL_RAISES: dict[tuple[str, str], str] = {
    ("catalog.py", "ValueError"): "inside pydantic validators: ValidationError -> ConfigError",
    ("engine/backends/tool_calls.py", "ValueError"): "json.loads's own; the vLLM backend "
    "makes it the row's RowFailure",
    ("engine/core/arrow_types.py", "ValueError"): "a value that misses its SQL type: the "
    "caller makes it the row's errorMessage",
    ("engine/core/arrow_types.py", "TypeError"): "json's `default` hook protocol",
    ("engine/core/loop.py", "RuntimeError"): "programmer errors: run() from the loop's own "
    "thread, or after the exit hook stopped the loop",
    ("engine/process/lifeline.py", "ValueError"): "a line that is not a report: the launcher "
    "makes it an EngineUnavailableError",
    ("engine/vllm/compat/shared_tails.py", "AttributeError"): "a module __getattr__'s protocol "
    "(the connector class is built on first access)",
    ("engine/vllm/model.py", "NotImplementedError"): "vLLM's model interface protocol",
    ("engine/vllm/zygote.py", "OSError"): "the OS failed to start a process helper: the "
    "zygote is not used",
    ("jobs/cli.py", "SystemExit"): "the CLI's exit codes",
    ("jobs/outputs.py", "TypeError"): "programmer error: an Output kind with no errors table",
    ("jobs/outputs.py", "OSError"): "a failed syscall's errno, as os functions raise it",
    ("jobs/schedule.py", "ValueError"): "inside pydantic validation of a job file (JobError)",
    ("serving/store.py", "ValueError"): "programmer error: a record without an endpoint",
    ("sql/task_functions.py", "ValueError"): "a model answer ai_mask cannot use: the caller "
    "makes it a RowError",
}

#: Exception classes outside the tree: private control flow, caught in their module.
PRIVATE_CLASSES = {
    ("sql/calls.py", "_NotConstant"),
    ("sql/ddl_parser.py", "_Fail"),
}

_BUILTIN_ERRORS = {
    name
    for name in dir(builtins)
    if isinstance(getattr(builtins, name), type)
    and issubclass(getattr(builtins, name), BaseException)
}


def _sources() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def _raised_builtins(tree: ast.Module) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name) and target.id in _BUILTIN_ERRORS:
                found.add((target.id, node.lineno))
    return found


def test_every_builtin_exception_raised_is_a_listed_internal_one() -> None:
    unlisted = [
        f"ai_query/{path}:{line}: raise {name}(...)"
        for path, tree in _sources()
        for name, line in sorted(_raised_builtins(tree))
        if (path, name) not in INTERNAL_RAISES
    ]
    assert not unlisted, "raise a tree error (ai_query.errors) instead:\n" + "\n".join(unlisted)


def test_the_internal_list_holds_no_stale_entry() -> None:
    raised = {(path, name) for path, tree in _sources() for name, _ in _raised_builtins(tree)}
    stale = sorted(set(INTERNAL_RAISES) - raised)
    assert not stale, f"no longer raised, remove from INTERNAL_RAISES: {stale}"


def test_every_exception_class_of_the_package_is_in_the_tree() -> None:
    outside = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef) or path == "errors.py":
                continue
            bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
            if bases & _BUILTIN_ERRORS and (path, node.name) not in PRIVATE_CLASSES:
                outside.append(f"ai_query/{path}: class {node.name}({', '.join(sorted(bases))})")
    assert not outside, "derive from ai_query.errors.AIQueryError:\n" + "\n".join(outside)


def test_the_raise_walk_can_fail() -> None:
    tree = ast.parse("def f():\n    raise ValueError('bare')\n")
    assert _raised_builtins(tree) == {("ValueError", 2)}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, id=name)
        for name, cls in vars(errors_module).items()
        if inspect.isclass(cls) and issubclass(cls, BaseException)
    ],
)
def test_each_tree_error_is_drawn_in_the_docstring_and_documented(name: str) -> None:
    cls = getattr(errors_module, name)
    assert issubclass(cls, AIQueryError)
    assert cls.__doc__, f"{name} needs a one-line docstring"
    assert f" {name}" in (errors_module.__doc__ or ""), f"draw {name} in the tree"


def test_row_failure_and_api_error_are_in_the_tree() -> None:
    from ai_query.engine.backends.backend import RowFailure
    from ai_query.errors import ProviderError
    from ai_query.serving.http.problems import APIError

    assert issubclass(RowFailure, AIQueryError) and issubclass(ProviderError, RowFailure)
    assert issubclass(APIError, AIQueryError)
