"""Images/s: ``ai_query(endpoint, prompt, files => content)`` in DuckDB vs vLLM offline
``LLM.chat`` with the same images and prompts, one run, each in its own process.

A table of distinct PNG and JPEG images (written with Pillow) goes through ``SELECT
ai_query('vision', <prompt>, files => content) FROM t`` on ``ai_query.connect()`` (vLLM in a
private engine server: bytes -> Arrow -> Flight -> vLLM's image processor) and through
``LLM.chat`` with the same images as ``image_url`` data URL parts. Each trial uses a new
prompt (the engine's memo would answer a repeat), the sides alternate, and answers that differ
are counted. The model is the tiny VLM built from the bundled SmolLM2 (its answers mean nothing;
the path and its cost are what is measured), or ``--model DIR`` (a real vision-language model).

    .venv/bin/python bench/vision.py [--images 256] [--max-tokens 16] [--trials 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import OfflineBaseline, cpu_line, report, timed  # noqa: E402


def images(n: int) -> list[bytes]:
    """``n`` distinct images, 64x48 to 255x191 pixels, every third a JPEG."""
    from PIL import Image

    out = []
    for i in range(n):
        buf = io.BytesIO()
        size = (64 + i % 192, 48 + i % 144)
        Image.new("RGB", size, (i * 7 % 256, i * 13 % 256, i * 29 % 256)).save(
            buf, "JPEG" if i % 3 == 2 else "PNG"
        )
        out.append(buf.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="a vision-language model dir")
    args = parser.parse_args()

    import pyarrow as pa

    import ai_query
    from ai_query.catalog import Catalog, local_endpoint
    from ai_query.engine.backends.bundled import resolve_model_dir

    print(cpu_line())
    model = args.model.resolve() if args.model else resolve_model_dir("tiny-vlm-smollm2")
    print(f"model: {model}; {args.images} images x {args.max_tokens} tokens, {args.trials} trials")
    data = images(args.images)
    baseline = OfflineBaseline(model, None)  # vLLM offline, ai_query's engine settings
    print(f"baseline engine: {baseline.settings}")
    con = ai_query.connect(catalog=Catalog([local_endpoint("vision", str(model), "llm/v1/chat")]))
    con.raw.register("src", pa.table({"content": pa.array(data, pa.binary())}))
    con.execute("CREATE TABLE t AS SELECT row_number() OVER () AS i, content FROM src")
    params = f"modelParameters => {{'max_tokens': {args.max_tokens}}}"
    con.sql(f"SELECT ai_query('vision', 'warm up', files => content, {params}) FROM t LIMIT 1"
            ).fetchall()
    baseline.chat(["warm up"], args.max_tokens, data[:1])

    ours: list[float] = []
    theirs: list[float] = []
    differ = 0
    for trial in range(args.trials):
        prompt = f"Describe the image in a few words ({trial + 1})."
        sql = f"SELECT ai_query('vision', '{prompt}', files => content, {params}) FROM t ORDER BY i"

        def run_ours(q: str = sql) -> list[Any]:
            return [r[0] for r in con.sql(q).fetchall()]

        def run_theirs(p: str = prompt) -> tuple[float, list[str]]:
            return baseline.chat([p] * len(data), args.max_tokens, data)

        if trial % 2:  # alternate which side runs first
            (seconds, answers) = run_theirs()
            mine, mine_s = timed(run_ours)
        else:
            mine, mine_s = timed(run_ours)
            (seconds, answers) = run_theirs()
        ours.append(mine_s)
        theirs.append(seconds)
        differ += sum(a != b for a, b in zip(mine, answers, strict=True))
        print(f"trial {trial + 1}: ai_query {mine_s:.2f} s, vLLM offline {seconds:.2f} s")
    baseline.close()
    con.close()
    n = len(data)
    print(f"answers differing from vLLM offline: {differ} of {n * args.trials}")
    report("images/s (median)", n / statistics.median(ours), n / statistics.median(theirs),
           "images/s", 0.9)


if __name__ == "__main__":
    main()
