"""Images from SQL in DuckDB: ``ai_query(endpoint, prompt, files => content)`` over
``read_blob`` (and Databricks' ``READ_FILES(..., format => 'binaryFile')``), answered by an
external vision provider that receives each image as a data URL: one answer per image, in row
order; bad files are row errors; a repeated image is sent once; a re-run is answered from the
engine's memo."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import ai_query
from ai_query.catalog import Catalog
from ai_query.engine.local import LocalEngine
from ai_query.errors import RowError
from tests.images import write_bad_files, write_images
from tests.vision_provider import VisionProvider, seen


@pytest.fixture
def provider() -> Iterator[VisionProvider]:
    server = VisionProvider()
    yield server
    server.close()


def _connection(provider: VisionProvider) -> ai_query.AIQueryConnection:
    catalog = Catalog.from_data(
        [{"name": "ext-vision", "config": {"served_entities": [provider.entity()]}}]
    )
    return ai_query.connect(engine=LocalEngine(catalog))


def test_one_answer_per_image_in_row_order(provider: VisionProvider, tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", 50)
    (tmp_path / "imgs" / "img050.png").write_bytes(paths[7].read_bytes())  # a duplicate
    con = _connection(provider)
    rows = con.sql(
        "SELECT filename, ai_query('ext-vision', 'Describe the image.', files => content) AS a "
        f"FROM read_blob('{tmp_path}/imgs/*') ORDER BY filename"
    ).fetchall()
    assert len(rows) == 51
    for filename, answer in rows:
        assert answer == f"Describe the image. | {seen(Path(filename).read_bytes())}"
    assert provider.images == 50  # the duplicate was sent once
    again = con.sql(
        "SELECT ai_query('ext-vision', 'Describe the image.', files => content) "
        f"FROM read_blob('{tmp_path}/imgs/*')"
    ).fetchall()
    assert len(again) == 51 and provider.images == 50  # the re-run: all from the memo


def test_bad_files_are_row_errors(provider: VisionProvider, tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 3)
    write_bad_files(tmp_path / "imgs")
    con = _connection(provider)
    con.sql(f"CREATE TABLE f AS SELECT filename, content FROM read_blob('{tmp_path}/imgs/*')")
    con.sql("INSERT INTO f VALUES ('null.png', NULL)")
    rows = dict(con.sql(
        "SELECT filename, ai_query('ext-vision', 'Describe.', files => content, "
        "failOnError => false) FROM f"
    ).fetchall())
    name = {Path(k).name: v for k, v in rows.items()}
    assert "is corrupt" in name["bad1_corrupt.png"]["errorMessage"]
    assert "not an image ai_query can send" in name["bad2_text.png"]["errorMessage"]
    assert "over the 20.0 MiB limit" in name["bad3_big.png"]["errorMessage"]
    assert all(name[k]["result"] is None for k in ("bad1_corrupt.png", "bad2_text.png"))
    assert name["null.png"] == {"result": "Describe.", "errorMessage": None}  # a text request
    for i in range(3):
        assert name[f"img{i:03d}.{'jpg' if i == 2 else 'png'}"]["errorMessage"] is None
    assert provider.images == 3  # nothing was sent for the bad files
    with pytest.raises(RowError, match=r"endpoint 'ext-vision' failed on row 0: .* is corrupt"):
        con.execute(
            "SELECT ai_query('ext-vision', 'Describe.', files => content) FROM f "
            "WHERE filename LIKE '%bad1%'"
        ).fetchall()


def test_typed_answers_about_images(provider: VisionProvider, tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 4)
    con = _connection(provider)
    rows = con.sql(
        "SELECT ai_query('ext-vision', 'Caption it.', files => content, "
        "returnType => 'STRUCT<caption: STRING>') AS a "
        f"FROM read_blob('{tmp_path}/imgs/*') ORDER BY filename"
    ).fetchall()
    assert [r[0]["caption"].split(" | ")[-1][:3] for r in rows] == ["PNG", "PNG", "JPE", "PNG"]


def test_databricks_read_files_binary_file(provider: VisionProvider, tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", 5)
    con = _connection(provider)
    rows = con.databricks_sql(
        "SELECT path, length, ai_query('ext-vision', 'Describe.', files => content) AS a "
        f"FROM READ_FILES('{tmp_path}/imgs/*', format => 'binaryFile') ORDER BY path"
    ).fetchall()
    assert [(Path(p), n) for p, n, _ in rows] == [(p, p.stat().st_size) for p in paths]
    assert [a for *_, a in rows] == [f"Describe. | {seen(p.read_bytes())}" for p in paths]


def test_the_same_text_with_other_images_is_not_one_request(
    provider: VisionProvider, tmp_path: Path
) -> None:
    paths = write_images(tmp_path / "imgs", 3)
    con = _connection(provider)
    answers = [r[0] for r in con.sql(
        "SELECT ai_query('ext-vision', 'Same text.', files => content) "
        f"FROM read_blob('{tmp_path}/imgs/*') ORDER BY filename"
    ).fetchall()]
    digests = [hashlib.sha256(p.read_bytes()).hexdigest()[:8] for p in paths]
    assert [a.rsplit(" ", 1)[1] for a in answers] == digests


def test_explain_counts_each_image_as_its_own_request(
    provider: VisionProvider, tmp_path: Path
) -> None:
    paths = write_images(tmp_path / "imgs", 4)
    (tmp_path / "imgs" / "img004.png").write_bytes(paths[1].read_bytes())  # a duplicate
    con = _connection(provider)
    [row] = con.explain(
        "SELECT ai_query('ext-vision', 'Describe.', files => content) "
        f"FROM read_blob('{tmp_path}/imgs/*')"
    ).to_pylist()
    assert (row["rows"], row["distinct_requests"], row["to_send"]) == (5, 4, 4)
    assert "each image adds the model's image tokens" in row["note"]
    assert provider.requests == 0  # EXPLAIN calls no model


def test_the_providers_refusal_is_the_rows_error(tmp_path: Path) -> None:
    provider = VisionProvider(max_side=30)
    try:
        write_images(tmp_path / "imgs", 16)  # sides 16 to 31 px wide
        con = _connection(provider)
        rows = con.sql(
            "SELECT filename, ai_query('ext-vision', 'Describe.', files => content, "
            f"failOnError => false) AS a FROM read_blob('{tmp_path}/imgs/*') ORDER BY filename"
        ).fetchall()
    finally:
        provider.close()
    refused = [Path(f).name for f, a in rows if a["errorMessage"] is not None]
    assert refused == ["img015.png"]  # 31 px wide; img014.jpg is 30 px
    [error] = [a["errorMessage"] for f, a in rows if f.endswith("img015.png")]
    assert "HTTP 400" in error and "the most is 30 px" in error and "sk-vision-test" not in error
