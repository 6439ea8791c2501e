"""The layers of STYLE.md, read from the source (every import, lazy ones too): which part may
import which, where the heavy third-party packages may be imported, and no import cycles."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ai_query"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


NAMES = {_module_name(p) for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, *, for_types_too: bool = False) -> set[str]:
    """Every module ``path`` imports when it runs, at module level or inside functions
    (``from pkg import sub`` names the submodule ``pkg.sub`` when there is one, else ``pkg``);
    with ``for_types_too``, also those imported for type checkers only."""
    tree = ast.parse(path.read_text())
    for block in ast.walk(tree):  # imports for type checkers only do not run
        if (not for_types_too and isinstance(block, ast.If)
                and ast.unparse(block.test).endswith("TYPE_CHECKING")):
            block.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in NAMES else node.module)
    return found


MODULES = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _part(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _ours(name: str) -> str | None:
    """The ai_query module ``name`` refers to (a module of the package), or None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


#: part -> parts it must never import.
FORBIDDEN = {
    "ai_query.sql": {"ai_query.engine", "ai_query.udf", "ai_query.serving", "ai_query.jobs"},
    "ai_query.engine": {"ai_query.udf", "ai_query.serving", "ai_query.jobs", "ai_query.cli"},
    "ai_query.udf": {"ai_query.serving", "ai_query.jobs", "ai_query.cli"},
    "ai_query.jobs": {"ai_query.serving", "ai_query.cli"},
    "ai_query.serving": {"ai_query.udf", "ai_query.jobs", "ai_query.cli"},
}


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_parts_import_only_what_their_layer_allows(part: str) -> None:
    wrong = sorted(
        f"{module} imports {_ours(name)}"
        for module, names in MODULES.items()
        if _part(module) == part
        for name in names
        if (target := _ours(name)) is not None and _part(target) in FORBIDDEN[part]
    )
    assert wrong == []


def test_jobs_do_not_import_the_package_init() -> None:
    wrong = [m for m, names in MODULES.items() if _part(m) == "ai_query.jobs" and "ai_query" in {
        _ours(n) for n in names}]
    assert wrong == []


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        pytest.param("vllm", {"ai_query.engine.vllm"}, id="vllm"),
        pytest.param("pyspark", {"ai_query.udf.spark", "ai_query.jobs.spark_batches"}, id="pyspark"),
        pytest.param("duckdb", {"ai_query.udf.duckdb", "ai_query.jobs", "ai_query.sql_workspace"},
                     id="duckdb"),
    ],
)
def test_heavy_packages_are_imported_in_one_place(package: str, allowed: set[str]) -> None:
    users = {
        m for m, names in MODULES.items() if any(n == package or n.startswith(package + ".")
                                                 for n in names)
    }
    assert {m for m in users if not any(m == a or m.startswith(a + ".") for a in allowed)} == set()


#: The one door to vLLM's and multiprocessing's internals (a package).
COMPAT = "ai_query.engine.vllm.compat"

#: vLLM's public API (``LLM``, ``AsyncLLM``, engine args, sampling, pooling and structured-output
#: params), and the plain ``multiprocessing`` package: all that ``engine/vllm`` may import outside
#: its compat module, the one door to vLLM's and multiprocessing's internals (STYLE.md).
PUBLIC = {"vllm", "vllm.engine.arg_utils", "vllm.v1.engine.async_llm", "vllm.sampling_params",
          "vllm.pooling_params", "vllm.config", "multiprocessing"}


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module of an installed package (found without importing it)."""
    top, *rest = dotted.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return False
    path = Path(next(iter(spec.submodule_search_locations)), *rest)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _modules_imported(path: Path, packages: set[str]) -> set[str]:
    """The modules of ``packages`` that ``path`` imports (``from pkg import sub`` included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in packages)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in packages:
                found.add(node.module)
                found.update(m for a in node.names if _is_module(m := f"{node.module}.{a.name}"))
    return found


def _in_compat(module: str) -> bool:
    return module == COMPAT or module.startswith(COMPAT + ".")


def test_vllm_internals_are_reached_only_through_compat() -> None:
    wrong = sorted(
        f"{_module_name(path)} imports {name}"
        for path in PACKAGE.rglob("*.py")
        if not _in_compat(_module_name(path))
        for name in _modules_imported(path, {"vllm", "multiprocessing"})
        if name not in PUBLIC
    )
    assert wrong == []


def test_no_private_attributes_of_vllm_or_multiprocessing_outside_compat() -> None:
    """``module._private`` on an imported vllm or multiprocessing module (``util._args...``)."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if _in_compat(_module_name(path)):
            continue
        tree = ast.parse(path.read_text())
        aliases = {
            alias.asname or alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
            if (getattr(node, "module", None) or alias.name).split(".")[0]
            in {"vllm", "multiprocessing"}
        }
        wrong += [
            f"{_module_name(path)}:{node.lineno} {ast.unparse(node)}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and ast.unparse(node.value).split(".")[0] in aliases
        ]
    assert wrong == []


def test_no_import_cycles() -> None:
    """Not even through imports for type checkers only: a cycle there is a layering mistake
    that the next runtime import turns into a crash."""
    typed = {_module_name(p): _imports(p, for_types_too=True) for p in sorted(PACKAGE.rglob("*.py"))}
    graph = {m: {t for n in names if (t := _ours(n)) is not None and t != m}
             for m, names in typed.items()}
    # ``ai_query`` (the package's __init__) re-exports; importing a submodule runs it first,
    # which is not an edge of its own.
    graph = {m: {t for t in ts if t != "ai_query"} for m, ts in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_the_cli_reads_argv() -> None:
    readers = sorted(
        _module_name(p) for p in PACKAGE.rglob("*.py")
        if ("sys.argv" in p.read_text() or "argparse" in p.read_text())
        and _module_name(p) != "ai_query.cli"
    )
    assert readers == []


def test_settings_are_read_only_where_config_says() -> None:
    """``settings()`` (the environment) is read at the entry points and the few use-time values
    ``config.SETTINGS_READERS`` names; everything else is given its values."""
    from ai_query.config import SETTINGS_READERS

    readers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "settings"):
                readers.add(_module_name(path))
    assert readers - {"ai_query.config"} == set(SETTINGS_READERS)
