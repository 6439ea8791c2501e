"""rows/s of ``ai_filter`` vs ``ai_query`` with the same prompt, in DuckDB with the bundled chat
model (or ``--model DIR``, for both): the guided true/false answer is a token or two, where
``ai_query`` generates freely.

    .venv/bin/python bench/ai_filter.py [--rows 2048] [--model DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import add_model_args, bench_catalog, cpu_line, texts, timed  # noqa: E402

CHAT = "smollm2-135m-instruct"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2048)
    add_model_args(parser)
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    import pyarrow as pa

    import ai_query
    from ai_query.sql.task_functions import task_spec

    docs = texts(args.rows)
    con = ai_query.connect(catalog=bench_catalog(args))
    con.raw.register("src", pa.table({"body": docs}))
    con.execute("CREATE TABLE docs AS SELECT * FROM src")
    con.sql("SELECT ai_filter('Is this a warm up?'), ai_query('smollm2-135m-instruct', 'hi')").fetchall()
    question = "Is this text about chess?"
    # ai_query gets exactly ai_filter's prompt (without the guided choice).
    prompt = task_spec("ai_filter", [None]).filter_prompt(question, "<<>>")
    head, tail = (part.replace("'", "''") for part in prompt.split("<<>>"))
    filtered, filter_s = timed(
        lambda: con.sql(f"SELECT count(*) FROM docs WHERE ai_filter('{question}', body)").fetchall()
    )
    _, query_s = timed(
        lambda: con.sql(
            f"SELECT count(*) FROM docs WHERE lower(trim(ai_query('{CHAT}', '{head}' || body || "
            f"'{tail}'))) LIKE 'true%'"
        ).fetchall()
    )
    print(f"ai_filter: {len(docs) / filter_s:,.1f} rows/s ({filtered[0][0]} kept)")
    print(f"ai_query, same prompt: {len(docs) / query_s:,.1f} rows/s")
    print(f"ratio ai_filter / ai_query = {query_s / filter_s:.2f}")


main()
