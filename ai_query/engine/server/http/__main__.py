"""``python -m ai_query.engine.server.http``: the HTTP server alone (tests, until the CLI's
``ai-query serve`` runs it next to Flight)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ai_query.catalog import Catalog
from ai_query.engine.server.http.app import run_http
from ai_query.engine.server.http.options import HTTPOptions


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m ai_query.engine.server.http")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--catalog", type=Path, help="endpoint catalog file (JSON/YAML)")
    parser.add_argument("--database", type=Path, help="SQLite file of API-managed endpoints")
    parser.add_argument("--tokens-file", type=Path, help="bearer tokens file: {token: principal}")
    parser.add_argument("--inference-table", type=Path, help="inference table directory")
    parser.add_argument("--engine", choices=["vllm", "deterministic"], default="vllm")
    parser.add_argument("--default-max-tokens", type=int, default=1024)
    parser.add_argument("--rate-limit-period-scale", type=float, default=1.0)
    parser.add_argument("--inference-flush-seconds", type=float, default=1.0)
    parser.add_argument("--warmup", action="store_true", help="start every model at start-up")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    options = HTTPOptions(
        host=args.host,
        port=args.port,
        database=args.database,
        tokens_file=args.tokens_file,
        inference_table=args.inference_table,
        engine=args.engine,
        default_max_tokens=args.default_max_tokens,
        rate_limit_period_scale=args.rate_limit_period_scale,
        inference_flush_seconds=args.inference_flush_seconds,
        warmup=args.warmup,
        log_level=args.log_level,
    )
    catalog = Catalog.load(args.catalog) if args.catalog else None
    run_http(options, catalog=catalog)


if __name__ == "__main__":
    main()
