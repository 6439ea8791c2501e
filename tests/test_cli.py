"""The installed ``ai-query`` entry point, as a user runs it (subprocesses, real engine)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

EXE = shutil.which("ai-query", path=str(Path(sys.executable).parent)) or "ai-query"


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)


def test_help_everywhere() -> None:
    for args in ([], ["sql"], ["endpoints"], ["endpoints", "list"], ["serve"], ["demo"]):
        out = cli(*args, "--help")
        assert out.returncode == 0, (args, out.stderr)
        assert "Usage" in out.stdout


def test_endpoints_list_shows_catalog(tmp_path: Path) -> None:
    out = cli("endpoints", "list")
    assert out.returncode == 0
    assert "all-minilm-l6-v2" in out.stdout and "llm/v1/embeddings" in out.stdout
    bad = tmp_path / "c.json"
    bad.write_text(
        json.dumps(
            [{"name": "x", "config": {"served_entities": [{"entity_name": "a", "task": "nope"}]}}]
        )
    )
    out = cli("endpoints", "list", "--catalog", str(bad))
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error:") and "served_entities[0].task" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        pytest.param("SELECT ai_query('nope', 'x')", "unknown endpoint 'nope'", id="endpoint"),
        pytest.param(
            "SELECT ai_query('smollm2-135m-instruct', 'x', modelParameters => named_struct('max_tokenz', 1))",
            "unknown modelParameters key 'max_tokenz'",
            id="parameter",
        ),
        pytest.param(
            "SELECT ai_query('smollm2-135m-instruct', 'x', returnType => 'STRUCT<a INT')",
            "bad returnType",
            id="return-type",
        ),
        pytest.param("SELEC 1", "", id="syntax"),
    ],
)
def test_errors_are_one_line(sql: str, message: str) -> None:
    out = cli("sql", sql)
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_databricks_docs_examples_run_verbatim(tmp_path: Path) -> None:
    query = tmp_path / "q.sql"
    query.write_text(
        "SELECT ai_query('databricks-meta-llama-3-3-70b-instruct', 'Describe Databricks SQL in 30 words.',\n"
        "  modelParameters => named_struct('max_tokens', 20, 'temperature', 0.0)) AS summary,\n"
        "  ai_query(endpoint => 'databricks-gte-large-en', request => 'hello') AS embedding,\n"
        "  ai_query('databricks-meta-llama-3-3-70b-instruct', 'Is the sky blue? Answer yes or no.',\n"
        "    returnType => 'STRUCT<answer: STRING>', failOnError => false) AS typed\n"
    )
    out_file = tmp_path / "out.parquet"
    out = cli("sql", "-f", str(query), "--output", str(out_file))
    assert out.returncode == 0, out.stderr[-3000:]
    table = pq.read_table(out_file)
    row = table.to_pylist()[0]
    assert isinstance(row["summary"], str) and row["summary"]
    assert len(row["embedding"]) == 384
    assert set(row["typed"]) == {"result", "errorMessage"}
    printed = cli(
        "sql",
        "--read-dialect",
        "duckdb",
        "SELECT ai_query('smollm2-135m-instruct', 'Say hi', modelParameters := {'max_tokens': 4}) AS hi",
    )
    assert printed.returncode == 0 and "hi" in printed.stdout
