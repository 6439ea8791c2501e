"""The installed ``ai-query`` entry point, as a user runs it (subprocesses, real engine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ai_query.engine.vllm.model import engine_defaults
from ai_query.machine import this_machine

EXE = shutil.which("ai-query", path=str(Path(sys.executable).parent)) or "ai-query"


def cli(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def test_help_everywhere() -> None:
    for args in ([], ["sql"], ["endpoints"], ["endpoints", "list"], ["serve"], ["demo"],
                 ["machine"]):
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


def test_machine_shows_the_machine_and_each_local_models_settings(tmp_path: Path) -> None:
    catalog = tmp_path / "c.json"
    catalog.write_text(json.dumps([
        {"name": "mine", "config": {"served_entities": [
            {"entity_name": "smollm2-135m-instruct", "engine_args": {"block_size": 64}}]}},
        {"name": "vectors", "config": {"served_entities": [{"entity_name": "all-minilm-l6-v2"}]}},
        {"name": "plain", "config": {"served_entities": [
            {"entity_name": "smollm2-135m-instruct", "engine_args": {"kv_transfer_config": None}}]}},
    ]))
    out = cli("machine", "--catalog", str(catalog), env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    assert lines[0].startswith("machine: ") and ("avx2" in lines[0]) == (" avx2 " in flags + " ")
    assert "OMP_NUM_THREADS=1" in lines[1], "the user's environment wins"
    tcmalloc = this_machine().tcmalloc
    assert (f"LD_PRELOAD={tcmalloc}" in lines[1]) == bool(tcmalloc), lines[1]
    mine = next(x for x in lines if x.startswith("mine "))
    assert "block_size=64" in mine and "max_num_seqs=256" in mine and "dtype=" in mine
    tails = "on" if engine_defaults("generate").get("kv_transfer_config") else "off"  # CPU: on
    assert mine.endswith(f", shared tails {tails}") and "kv_transfer_config" not in mine, mine
    plain = next(x for x in lines if x.startswith("plain "))
    assert plain.endswith(", shared tails off") and "kv_transfer_config" not in plain, plain
    assert any(x.startswith("vectors ") and "runner=pooling" in x for x in lines)


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
def test_a_failed_row_is_one_line_in_our_words(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"  # an external model whose provider is not there
    catalog.write_text(json.dumps([{"name": "ext", "config": {"served_entities": [{
        "name": "e", "external_model": {
            "name": "gpt-x", "provider": "openai", "task": "llm/v1/chat", "max_retries": 0,
            "openai_config": {"openai_api_base": "http://127.0.0.1:9/v1",
                              "openai_api_key_plaintext": "sk-cli-unit-4d1e"}}}]}}]))
    out = cli("sql", "--catalog", str(catalog), "SELECT ai_query('ext', 'x') AS a")
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: ai_query endpoint 'ext' failed on row 0: external model 'gpt-x' "
                     "failed after 0 retries: Connection error."], out.stderr
    assert "Traceback" not in out.stderr and "UDF" not in out.stderr


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
    timings = tmp_path / "timings.jsonl"
    out = cli("sql", "-f", str(query), "--output", str(out_file),
              env={"AI_QUERY_TIMINGS": str(timings)})
    assert out.returncode == 0, out.stderr[-3000:]
    table = pq.read_table(out_file)
    row = table.to_pylist()[0]
    assert isinstance(row["summary"], str) and row["summary"]
    assert len(row["embedding"]) == 384
    assert set(row["typed"]) == {"result", "errorMessage"}
    # Cold start: the server imported vLLM from its start and began both of the query's models
    # as soon as it listened; their engines built one after the other.
    marks = [json.loads(line) for line in timings.read_text().splitlines()]
    steps = [m["step"] for m in marks]
    assert "server: vllm import start" in steps and "server: vllm imported" in steps
    assert {m["endpoint"] for m in marks if m["step"] == "server: warm"} == {
        "databricks-meta-llama-3-3-70b-instruct", "databricks-gte-large-en"}
    builds = [m for m in marks if m["step"] in ("engine: build start", "engine: ready")]
    assert [m["step"] for m in builds] == ["engine: build start", "engine: ready"] * 2, builds
    printed = cli(
        "sql",
        "--read-dialect",
        "duckdb",
        "SELECT ai_query('smollm2-135m-instruct', 'Say hi', modelParameters := {'max_tokens': 4}) AS hi",
    )
    assert printed.returncode == 0 and "hi" in printed.stdout


#: The examples of Databricks' documentation of each task function, as written there.
TASK_FUNCTION_DOCS_EXAMPLES = """SELECT
  ai_analyze_sentiment('I am happy') AS sentiment,
  ai_classify("My password is leaked.", ARRAY("urgent", "not urgent")) AS urgency,
  ai_extract(
    'John Doe lives in New York and works for Acme Corp.',
    array('person', 'location', 'organization')
  ) AS entities,
  ai_fix_grammar('This sentence have some mistake') AS fixed,
  ai_gen('Generate a concise, cheerful email title for a summer bike sale with 20% discount')
    AS title,
  ai_mask(
    'John Doe lives in New York. His email is john.doe@example.com.',
    array('person', 'email')
  ) AS masked,
  ai_similarity('Apache Spark', 'Apache Spark') AS similarity,
  ai_summarize(
    'Apache Spark is a unified analytics engine for large-scale data processing. It provides '
    'high-level APIs in Java, Scala, Python and R, and an optimized engine that supports '
    'general execution graphs.',
    20
  ) AS summary,
  ai_translate('Hello, how are you?', 'es') AS translated
"""


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_task_function_docs_examples_run_verbatim(tmp_path: Path, engine: str) -> None:
    query = tmp_path / "q.sql"
    query.write_text(TASK_FUNCTION_DOCS_EXAMPLES)
    out_file = tmp_path / "out.parquet"
    out = cli("sql", "-f", str(query), "--engine", engine, "--output", str(out_file), timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    table = pq.read_table(out_file)
    row = table.to_pylist()[0]
    assert row["sentiment"] in ("positive", "negative", "neutral", "mixed")
    assert row["urgency"] in ("urgent", "not urgent")
    assert set(row["entities"]) == {"person", "location", "organization"}
    assert str(table.schema.field("similarity").type) == "float"
    assert row["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert len(row["summary"].split()) <= 20
    for name in ("fixed", "title", "masked", "translated"):
        assert isinstance(row[name], str), name


def test_serve_runs_itself_again_with_tcmalloc_only_as_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``serve`` execs itself (same PID, same argv) with the machine's tcmalloc preloaded when
    started without it; never when the CLI runs inside another program, nor a second time."""
    import ai_query.cli as cli_module
    import ai_query.config as config
    from ai_query.machine import Machine

    lib = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
    machine = Machine("CPU", frozenset({"avx2"}), 2, 24.0, None, lib)
    monkeypatch.setattr(config, "this_machine", lambda: machine)
    monkeypatch.delenv("AI_QUERY_TCMALLOC", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    execs: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda exe, argv, env: execs.append((exe, argv, env)))
    monkeypatch.setitem(cli_module._state, "console_script", False)
    cli_module._preload_machine_allocator()
    assert execs == []  # called inside another program: it cannot replace that process
    monkeypatch.setitem(cli_module._state, "console_script", True)
    cli_module._preload_machine_allocator()
    assert [(exe, argv, env["LD_PRELOAD"]) for exe, argv, env in execs] == [
        (sys.executable, sys.orig_argv, lib)
    ]
    monkeypatch.setenv("LD_PRELOAD", lib)  # the process it became: no second exec
    cli_module._preload_machine_allocator()
    monkeypatch.setenv("AI_QUERY_TCMALLOC", "0")
    monkeypatch.delenv("LD_PRELOAD")
    cli_module._preload_machine_allocator()
    assert len(execs) == 1
