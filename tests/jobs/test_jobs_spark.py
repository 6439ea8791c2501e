"""The same job on Spark (slow): Spark SQL runs each batch, ai_query rows go over Flight to
this process's engine (real vLLM) and result cache, and the output is a Delta table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_query.jobs.runner import run_job
from ai_query.jobs.spec import load_job
from tests.jobs.helpers import read_rows, write_reviews

pytestmark = pytest.mark.slow

JOB = """
name = "verdicts"
engine = "{engine}"
sql = \"\"\"
SELECT r.id, r.review, s.shop,
       ai_query('smollm2-135m-instruct', concat('One word for this review: ', r.review),
                modelParameters => named_struct('max_tokens', 4), failOnError => false) AS verdict
FROM reviews r JOIN shops s ON s.shop_id = r.id % 3\"\"\"
key = ["id"]
mode = "incremental"
max_rows_per_batch = 25
cache_path = "cache.sqlite"
input = "reviews"
inputs = {{reviews = "data/reviews.parquet", shops = "data/shops.csv"}}
output = {output}
"""


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from ai_query.udf.spark import local_session

    session = local_session("local[2]", app_name="ai-query-job-tests")
    yield session
    session.stop()


def _rows(n: int, start: int = 0) -> list[tuple[int, str]]:
    return [
        (i, f"Item {i}: it was {['good', 'poor', 'odd'][i % 3]}.") for i in range(start, start + n)
    ]


def _delta_rows(path: Path) -> list[dict[str, Any]]:
    from deltalake import DeltaTable

    return sorted(DeltaTable(str(path)).to_pyarrow_table().to_pylist(), key=lambda r: r["id"])


def test_the_same_job_on_spark_with_delta_output(
    spark: Any, real_engine: Any, tmp_path: Path
) -> None:
    write_reviews(tmp_path / "data" / "reviews.parquet", _rows(60))
    (tmp_path / "data" / "shops.csv").write_text("shop_id,shop\n0,north\n1,south\n2,east\n")
    (tmp_path / "duck.toml").write_text(JOB.format(engine="duckdb", output='"out/duck"'))
    (tmp_path / "spark.toml").write_text(
        JOB.format(engine="spark", output='{path = "out/delta", format = "delta"}')
    )
    on_duckdb = run_job(load_job(tmp_path / "duck.toml"), engine=real_engine)
    assert on_duckdb.rows_ok == 60
    job = load_job(tmp_path / "spark.toml")
    calls = real_engine.model_calls
    first = run_job(job, engine=real_engine)  # same requests: answered by the shared cache
    assert (first.status, first.rows_ok, first.output_rows) == ("succeeded", 60, 60)
    assert (first.cache_hits, first.cache_misses, real_engine.model_calls - calls) == (60, 0, 0)
    duck = read_rows(tmp_path / "out" / "duck")
    delta = _delta_rows(tmp_path / "out" / "delta")
    assert delta == duck  # the same table, row by row, typed the same
    assert delta[1]["shop"] == "south" and delta[1]["verdict"]["result"]

    rows = _rows(60)
    rows[10] = (10, "Item 10: it was wonderful.")
    write_reviews(tmp_path / "data" / "reviews.parquet", rows + _rows(5, start=60))
    second = run_job(job, engine=real_engine)  # new requests: to vLLM through Flight
    assert (second.kind, second.rows_processed, second.cache_misses) == ("incremental", 6, 6)
    assert real_engine.model_calls - calls == 6 and second.completion_tokens > 0
    after = _delta_rows(tmp_path / "out" / "delta")
    assert [r["id"] for r in after] == list(range(65))
    assert after[10]["review"] == "Item 10: it was wonderful." and after[64]["verdict"]["result"]
    assert all(after[i] == delta[i] for i in range(60) if i != 10)
    assert _delta_rows(tmp_path / "out" / "delta_errors") == []
