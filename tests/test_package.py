from __future__ import annotations

import subprocess
import sys
import types

import ai_query


def test_all_is_complete_and_sorted() -> None:
    public = {
        name
        for name, value in vars(ai_query).items()
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(value, types.ModuleType)
    }
    public -= {"annotations", "TYPE_CHECKING", "Any"}
    assert ai_query.__all__ == sorted(ai_query.__all__)
    assert set(ai_query.__all__) == public


def test_import_is_lazy() -> None:
    code = (
        "import sys, ai_query, ai_query.sql, ai_query.catalog;"
        "print(','.join(m for m in ('vllm','torch','pyspark','duckdb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_have_docstrings_and_one_root() -> None:
    from ai_query import errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    for cls in classes:
        assert cls.__doc__ and cls.__doc__.strip(), cls
        assert issubclass(cls, errors.AIQueryError)
    assert issubclass(errors.ConfigError, ValueError)
