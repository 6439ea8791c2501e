"""Images from SQL the way users enter: a ``python file.py`` script on DuckDB
(``ai_query.connect``), ``ai-query sql`` with Databricks' ``READ_FILES``, and a Spark script
over ``spark.read.format("binaryFile")``; 50 PNG/JPEG images plus a duplicate, a corrupt file,
a text file and an oversized one, answered by an external vision provider that decodes each
image it receives."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.images import write_bad_files, write_images
from tests.processes import run_script
from tests.vision_provider import VisionProvider, seen

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture
def provider() -> Iterator[VisionProvider]:
    server = VisionProvider()
    yield server
    server.close()


@pytest.fixture
def files(tmp_path: Path, provider: VisionProvider) -> Path:
    """The images, the bad files and a catalog with the vision endpoint, in ``tmp_path``."""
    paths = write_images(tmp_path / "imgs", 50)
    (tmp_path / "imgs" / "img050.png").write_bytes(paths[7].read_bytes())
    write_bad_files(tmp_path / "imgs")
    catalog = [{"name": "ext-vision", "config": {"served_entities": [provider.entity()]}}]
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    return tmp_path


def _check(rows: list[dict[str, Any]], folder: Path) -> None:
    """One row per file, in file order: the image's own answer, or the bad file's error."""
    names = sorted(p.name for p in (folder / "imgs").iterdir())
    assert [Path(r["path"]).name for r in rows] == names
    for row in rows:
        name = Path(row["path"]).name
        if name.startswith("bad"):
            assert row["result"] is None
            reason = {"bad1": "is corrupt", "bad2": "not an image", "bad3": "MiB limit"}
            assert reason[name[:4]] in row["errorMessage"]
        else:
            data = (folder / "imgs" / name).read_bytes()
            assert row == {**row, "result": f"Describe. | {seen(data)}", "errorMessage": None}


QUERY = (
    "SELECT filename AS path, ai_query('ext-vision', 'Describe.', files => content, "
    "failOnError => false) AS a FROM read_blob('imgs/*') ORDER BY path"
)


def test_duckdb_script(files: Path, provider: VisionProvider) -> None:
    proc = run_script(files, f"""
        import json
        import ai_query

        con = ai_query.connect(catalog="catalog.json")
        for run in (1, 2):
            rows = con.sql("{QUERY}").fetchall()
            print("ROWS", json.dumps([{{"path": p, **a}} for p, a in rows]), flush=True)
    """)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0
    runs = [json.loads(line[5:]) for line in out.splitlines() if line.startswith("ROWS ")]
    assert len(runs) == 2 and runs[0] == runs[1]
    _check(runs[0], files)
    assert provider.images == 50  # the duplicate once; the second run from the engine's memo


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_ai_query_sql_with_read_files(files: Path, provider: VisionProvider, engine: str) -> None:
    (files / "query.sql").write_text(
        "SELECT path, ai_query('ext-vision', 'Describe.', files => content, failOnError => false)"
        f" AS a FROM READ_FILES('{files}/imgs/*', format => 'binaryFile') ORDER BY path"
    )
    done = subprocess.run(
        [str(BIN / "ai-query"), "sql", "--engine", engine, "-c", "catalog.json", "-f",
         "query.sql", "--output", "out.json"],
        cwd=files, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (files / "out.json").read_text().splitlines()]
    _check([{"path": r["path"].removeprefix("file:"), **r["a"]} for r in rows], files)
    assert provider.images == 50


def test_spark_binary_file_script(files: Path, provider: VisionProvider) -> None:
    proc = run_script(files, """
        import json
        from ai_query.udf.spark import local_session, register

        spark = local_session("local[2]", app_name="images")
        register(spark, catalog="catalog.json")
        spark.read.format("binaryFile").load("imgs").createOrReplaceTempView("imgs")
        rows = spark.sql(
            "SELECT path, ai_query('ext-vision', 'Describe.', files => content, "
            "failOnError => false) AS a FROM imgs ORDER BY path"
        ).collect()
        print("ROWS", json.dumps([{"path": r.path, **r.a.asDict()} for r in rows]), flush=True)
        spark.stop()
    """)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0
    [line] = [line for line in out.splitlines() if line.startswith("ROWS ")]
    rows = json.loads(line[5:])
    for row in rows:
        row["path"] = row["path"].removeprefix("file:")
    _check(rows, files)
    assert provider.images == 50


def test_duckdb_script_with_the_local_tiny_vlm(tmp_path: Path) -> None:
    """The same table through a local vision-language model run by vLLM (the tiny VLM: its
    answers mean nothing, the path is what is tested)."""
    write_images(tmp_path / "imgs", 50)
    (tmp_path / "imgs" / "img050.png").write_bytes((tmp_path / "imgs" / "img007.png").read_bytes())
    write_bad_files(tmp_path / "imgs")
    catalog = [{"name": "tiny-vlm", "config": {"served_entities": [
        {"entity_name": "tiny-vlm-smollm2"}]}}]
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    proc = run_script(tmp_path, """
        import json
        import ai_query

        con = ai_query.connect(catalog="catalog.json")
        rows = con.sql(
            "SELECT filename, ai_query('tiny-vlm', 'Describe the image.', files => content, "
            "modelParameters => {'max_tokens': 8}, failOnError => false) AS a "
            "FROM read_blob('imgs/*') ORDER BY filename"
        ).fetchall()
        print("ROWS", json.dumps([{"path": p, **a} for p, a in rows]), flush=True)
    """)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0
    [line] = [line for line in out.splitlines() if line.startswith("ROWS ")]
    rows = {Path(r["path"]).name: r for r in json.loads(line[5:])}
    assert len(rows) == 54
    for name, row in rows.items():
        if name.startswith("bad"):
            assert row["result"] is None and row["errorMessage"]
        else:
            assert row["errorMessage"] is None and isinstance(row["result"], str), name
    assert rows["img050.png"]["result"] == rows["img007.png"]["result"]
    assert len({r["result"] for r in rows.values()}) > 2  # each answer depends on its image
