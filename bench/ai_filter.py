"""rows/s of ``ai_filter`` vs ``ai_query`` with the same prompt, in DuckDB with the bundled chat
model (or ``--model DIR``, for all sides): ``ai_filter`` scores ``true`` and ``false`` by the
model's own probabilities (three one-token reads a row); ``ai_query`` generates freely, and
``ai_query`` with a guided choice (``"scoring": "generate"``) generates one of the two.

Each side gets its own rows in each trial (the trial and the side start each row's text, so no
side answers from another's prefix cache or memo), the sides alternating over ``--trials``;
medians reported, ratios last.

    .venv/bin/python bench/ai_filter.py [--rows 512] [--trials 2] [--model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import CHAT_ENDPOINT, add_model_args, bench_catalog, cpu_line, texts, timed  # noqa: E402

QUESTION = "Is this text about chess?"
GUIDED = """'{"type": "choice", "choice": ["true", "false"], "scoring": "generate"}'"""


def side_sql(side: str, head: str, tail: str) -> str:
    """The count of kept rows of table ``docs`` for ``side``."""
    prompt = f"'{head}' || body || '{tail}'"
    if side == "ai_filter":
        return f"SELECT count(*) FROM docs WHERE ai_filter('{QUESTION}', body)"
    if side == "guided":
        return (f"SELECT count(*) FROM docs WHERE ai_query('{CHAT_ENDPOINT}', {prompt}, "
                f"responseFormat => {GUIDED}) = 'true'")
    return (f"SELECT count(*) FROM docs WHERE lower(trim(ai_query('{CHAT_ENDPOINT}', {prompt}))) "
            "LIKE 'true%'")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--trials", type=int, default=2)
    add_model_args(parser)
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    import pyarrow as pa

    import ai_query
    from ai_query.sql.task_functions import task_spec

    con = ai_query.connect(catalog=bench_catalog(args))
    con.sql(f"SELECT ai_filter('Is this a warm up?'), ai_query('{CHAT_ENDPOINT}', 'hi')").fetchall()
    # ai_query gets exactly ai_filter's prompt (without the choice).
    prompt = task_spec("ai_filter", [None]).filter_prompt(QUESTION, "<<>>")
    head, tail = (part.replace("'", "''") for part in prompt.split("<<>>"))
    sides = ["ai_filter", "ai_query", "guided"]
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    for trial in range(args.trials):
        turn = trial % len(sides)
        for side in sides[turn:] + sides[:turn]:
            rows = [f"({side}, trial {trial}) {text}" for text in texts(args.rows)]
            con.raw.register("src", pa.table({"body": rows}))
            con.execute("CREATE OR REPLACE TABLE docs AS SELECT * FROM src")
            kept, s = timed(lambda side=side: con.sql(side_sql(side, head, tail)).fetchall())
            seconds[side].append(s)
            print(f"trial {trial} {side}: {s:.2f} s, {args.rows / s:,.1f} rows/s "
                  f"({kept[0][0]} kept)", flush=True)
    median = {side: statistics.median(seconds[side]) for side in sides}
    for side in sides:
        print(f"{side}: {args.rows / median[side]:,.1f} rows/s (median of {args.trials})")
    print(f"ratio ai_filter / ai_query (free) = {median['ai_query'] / median['ai_filter']:.2f}")
    print(f"ratio ai_filter / ai_query (guided choice) = "
          f"{median['guided'] / median['ai_filter']:.2f}")


main()
