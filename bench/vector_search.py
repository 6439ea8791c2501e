"""Vector index build and search in DuckDB: rows/s of ``create_vector_index`` over synthetic
short texts (vs ``LLM.embed`` on the same texts, ratio) and queries/s of ``vector_search``.

Builds an index over ``--rows`` texts (default 100,000) with the bundled MiniLM embeddings (or
``--embed-model DIR``, on both sides)
through ``ai_query.connect()`` (the private engine server, as users get it), then runs
``--searches`` exact top-10 searches (default 1,000), each as one statement with a query
text (embedded) and, separately, all of them in one ``LATERAL`` statement.

    .venv/bin/python bench/vector_search.py [--rows 100000] [--searches 1000] [--no-offline] \
        [--embed-model DIR]
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    add_model_args,
    bench_catalog,
    cpu_line,
    embed_model_dir,
    offline_llm,
    texts,
    timed,
)

EMBED = "all-minilm-l6-v2"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--searches", type=int, default=1_000)
    parser.add_argument("--no-offline", action="store_true", help="skip the LLM.embed baseline")
    add_model_args(parser)
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    import pyarrow as pa

    import ai_query

    docs = texts(args.rows)
    offline_s = None
    if not args.no_offline:
        emb = offline_llm("embed", embed_model_dir(args))
        emb.embed(docs[:8], use_tqdm=False)
        _, offline_s = timed(lambda: emb.embed(docs, use_tqdm=False))
        emb = None
        gc.collect()

    con = ai_query.connect(catalog=bench_catalog(args))
    con.raw.register("src", pa.table({"id": list(range(len(docs))), "body": docs}))
    con.execute("CREATE TABLE notes AS SELECT * FROM src")
    con.sql(f"SELECT ai_query('{EMBED}', 'warm up')").fetchall()
    result, build_s = timed(
        lambda: ai_query.create_vector_index(con, "notes_idx", "notes", "id", "body", EMBED)
    )
    resync, resync_s = timed(
        lambda: ai_query.create_vector_index(con, "notes_idx", "notes", "id", "body", EMBED)
    )
    queries = [f"notes about topic {i}" for i in range(args.searches)]

    def one_by_one() -> None:
        for q in queries:
            con.sql(
                "SELECT id FROM vector_search(index => 'notes_idx', query_text => $q, "
                "num_results => 10)",
                params={"q": q},
            ).fetchall()

    _, single_s = timed(one_by_one)
    con.raw.register("qsrc", pa.table({"q": [q + " (batched)" for q in queries]}))
    con.execute("CREATE TABLE questions AS SELECT * FROM qsrc")
    _, lateral_s = timed(
        lambda: con.sql(
            "SELECT q.q, r.id FROM questions q, LATERAL vector_search(index => 'notes_idx', "
            "query_text => q.q, num_results => 10) r"
        ).fetchall()
    )
    print(f"index build: {result.rows:,} rows in {build_s:.1f} s = {result.rows / build_s:,.0f} rows/s")
    print(f"re-sync with nothing changed: {resync.embedded} embedded in {resync_s:.2f} s")
    if offline_s is not None:
        print(f"LLM.embed on the same texts: {len(docs) / offline_s:,.0f} rows/s")
        print(f"ratio index build / LLM.embed = {offline_s / build_s:.3f}")
    print(f"search: {len(queries) / single_s:,.1f} queries/s (one statement each)")
    print(f"search: {len(queries) / lateral_s:,.1f} queries/s (one LATERAL statement)")


main()
