"""The raw Arrow Flight round trip: an echo engine server, 10k-row batches of 200-char strings.

Measures rows/s (and MB/s of request text) through :class:`FlightEngineClient` to an engine
server process hosting the echo engine (no model), one caller and four concurrent callers, and
compares with the floor cost of the same bytes without a network: writing and reading each
batch as an Arrow IPC stream in this process, twice (request and answer). Ratio printed last.

    .venv/bin/python bench/flight_roundtrip.py [--batches 100] [--rows 10000] [--chars 200]

No model runs here: ``--model``/``--embed-model`` are accepted (as by every benchmark) and
change nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import add_model_args, cpu_line, timed  # noqa: E402

from ai_query.engine.core.batch import align_results, request_batch  # noqa: E402
from ai_query.engine.flight.client import FlightEngineClient  # noqa: E402
from ai_query.engine.process.launcher import start_server_process  # noqa: E402
from ai_query.options import CallOptions  # noqa: E402
from ai_query.testing import EchoEngine  # noqa: E402


def make_batches(count: int, rows: int, chars: int) -> list[pa.RecordBatch]:
    """``count`` request batches of ``rows`` distinct strings of ``chars`` characters."""
    options = CallOptions(endpoint="smollm2-135m-instruct")
    out = []
    for b in range(count):
        texts = [f"{b:05d}-{i:07d}-".ljust(chars, "x") for i in range(rows)]
        out.append(request_batch(texts, options))
    return out


def ipc_round_trip(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Serialise and read back ``batch`` as an Arrow IPC stream (what the wire must carry)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return pa.ipc.open_stream(sink.getvalue()).read_next_batch()


def in_process(batches: list[pa.RecordBatch]) -> float:
    """Seconds for request IPC + echo + answer IPC over every batch, no network."""
    engine = EchoEngine()

    def work() -> None:
        for batch in batches:
            ipc_round_trip(engine.run(ipc_round_trip(batch)))

    return timed(work)[1]


def over_flight(client: FlightEngineClient, batches: list[pa.RecordBatch], callers: int) -> float:
    """Seconds to send every batch through the server with ``callers`` threads."""

    def caller(k: int) -> None:
        for batch in batches[k::callers]:
            result = align_results(client.run(batch), batch.num_rows)
            if result.column("result").null_count:
                raise SystemExit("echo lost a value")

    def work() -> None:
        threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return timed(work)[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--chars", type=int, default=200)
    add_model_args(parser)  # accepted for uniformity: the echo engine runs no model
    args = parser.parse_args()
    print(cpu_line(), flush=True)
    batches = make_batches(args.batches, args.rows, args.chars)
    total_rows = args.batches * args.rows
    megabytes = sum(b.column(0).nbytes for b in batches) / 1e6

    server = start_server_process(engine_factory="ai_query.testing:echo_engine", preload=False)
    try:
        client = FlightEngineClient([server.url], chunk_rows=args.rows)  # one chunk per batch
        over_flight(client, batches[:3], 1)  # warm up the connection
        serial = over_flight(client, batches, 1)
        concurrent = over_flight(client, batches, 4)
    finally:
        server.stop(grace=10)
    local = in_process(batches)

    for name, seconds in (("flight, 1 caller", serial), ("flight, 4 callers", concurrent),
                          ("in-process IPC floor", local)):
        print(f"{name}: {total_rows / seconds:,.0f} rows/s, {megabytes / seconds:,.0f} MB/s of "
              f"request text ({args.batches} batches of {args.rows} x {args.chars} chars, "
              f"{seconds:.2f}s)")
    best = min(serial, concurrent)
    print(f"ratio flight/in-process IPC = {local / best:.3f}")


if __name__ == "__main__":
    main()
