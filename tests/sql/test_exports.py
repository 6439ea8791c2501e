"""The public surface of ai_query.sql: __all__ is complete and sorted, imports stay light."""

from __future__ import annotations

import subprocess
import sys

import ai_query.sql


def test_all_is_sorted_and_complete() -> None:
    assert ai_query.sql.__all__ == sorted(ai_query.sql.__all__)
    for name in ai_query.sql.__all__:
        assert getattr(ai_query.sql, name) is not None
    public = {
        name
        for name, value in vars(ai_query.sql).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("ai_query.sql")
    }
    assert public <= set(ai_query.sql.__all__)


def test_import_is_light() -> None:
    code = (
        "import sys, ai_query.sql; "
        "heavy = {'pyarrow', 'duckdb', 'pyspark', 'vllm', 'torch'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
