"""Shared tails through the real vLLM engine: a row behind an instruction gets the
instruction's last, partial KV block from a row in flight (vLLM counts those tokens as cached),
and the answers are the ones recomputing it gives (in float32, token for token)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.processes import run_script

pytestmark = pytest.mark.slow

CHAT = "smollm2-135m-instruct"
#: 300 tokens: 9 full 32-token blocks and 12 tokens of a partial one.
INSTRUCTION = [1000 + i for i in range(300)]


def chat_backend(real_engine):  # type: ignore[no-untyped-def]
    from ai_query.engine.backends.registry import shared_backend

    return shared_backend(real_engine.catalog.get(CHAT).config.served_entities[0])


async def cached_tokens(backend, instruction: list[int], row: int, **params) -> int:  # type: ignore[no-untyped-def]
    """The prompt tokens vLLM reports cached for ``row``'s prompt behind ``instruction``."""
    from vllm import SamplingParams

    prompt = {"prompt_token_ids": [*instruction, 5000 + row, 6001, 6002, 6003]}
    final = None
    async for out in backend._engine.generate(
            prompt, SamplingParams(temperature=0, **params), f"row-{instruction[0]}-{row}"):
        final = out
    assert final is not None
    return int(final.num_cached_tokens)


def test_a_row_gets_the_instructions_partial_block_from_a_row_in_flight(real_engine) -> None:
    backend = chat_backend(real_engine)
    assert backend.engine_args["kv_transfer_config"]["kv_connector"] == "SharedTailConnector"

    async def cached(row: int) -> int:
        return await cached_tokens(backend, INSTRUCTION, row, max_tokens=2)

    async def rows() -> list[int]:
        await backend.start()
        first = await cached(0)  # alone: the instruction's 9 full blocks enter the prefix cache
        return [first, *await asyncio.gather(cached(1), cached(2))]

    first, *together = real_engine.loop.run(rows())
    assert first < 288
    # Both hit the 9 full blocks; one computes block 9, the other gets its 12 shared tokens.
    assert sorted(together) == [288, 300]


def test_one_token_reads_get_the_instructions_partial_block_from_a_finished_read(
    real_engine,
) -> None:
    """A label score's reads generate one token each, so each finishes in the step that
    computes its prompt. 8 reads queued together behind a new instruction: one computes it,
    vLLM gives the other 7 its 9 full blocks in that step, one of them computes the partial
    block and the 6 that waited get its 12 tokens in the next step, copied from the finished
    read's freed block. Before, they waited for a read that was gone and went in one a step,
    each computing the 12 tokens again (288 cached)."""
    backend = chat_backend(real_engine)
    instruction = [2000 + i for i in range(300)]  # in no cache yet

    async def read(row: int) -> int:
        return await cached_tokens(backend, instruction, row, max_tokens=1,
                                   logprob_token_ids=[6004])

    async def reads() -> list[int]:
        await backend.start()
        engine = backend._engine
        await engine.pause_generation(mode="keep", clear_cache=False)  # the 8 are queued
        tasks = [asyncio.ensure_future(read(row)) for row in range(8)]
        for _ in range(500):
            if engine.output_processor.get_num_unfinished_requests() == 8:
                break
            await asyncio.sleep(0.01)
        await engine.resume_generation()
        return list(await asyncio.gather(*tasks))

    assert sorted(real_engine.loop.run(reads())) == [0, 288, *[300] * 6]


def test_a_users_table_behind_one_instruction_answers_as_recomputing_does(tmp_path: Path) -> None:
    """Float32 engines, so a copied block and a recomputed one are the same numbers. The
    shared-tails engine gets a KV cache of 72 blocks, too small for the table's rows at once:
    vLLM preempts rows (9 times in this setting, by vLLM's own counter offline) and sources'
    blocks are freed and reused while other rows still want them."""
    small = {"dtype": "float32", "num_gpu_blocks_override": 72}
    entity = {"entity_name": CHAT, "engine_args": small}
    off = {"entity_name": CHAT, "engine_args": {"dtype": "float32", "kv_transfer_config": None}}
    catalog = [{"name": "tails", "config": {"served_entities": [entity]}},
               {"name": "recompute", "config": {"served_entities": [off]}}]
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    proc = run_script(tmp_path, """
        import json
        import ai_query

        rules = " ".join(f"Rule {i}: answer in a few words about the topic." for i in range(30))
        con = ai_query.connect(catalog="catalog.json")
        con.sql(f"CREATE TABLE t AS SELECT i, '{rules}' || chr(10) || 'Topic: item ' || i || "
                "repeat(' and more words', 12) AS p FROM range(64) r(i)")
        params = "modelParameters => {'max_tokens': 48}"
        rows = con.sql(f"SELECT i, ai_query('tails', p, {params}) AS a, "
                       f"ai_query('recompute', p, {params}) AS b FROM t ORDER BY i").fetchall()
        print("ROWS", json.dumps(rows), flush=True)
        # Label scores: one-token reads, each gone after its step (its block copied from the
        # freed block), behind a prefix in no cache yet.
        fmt = json.dumps({"type": "choice", "choice": ["yes", "no"], "scores": True})
        q = "'Fine? ' || p"
        scores = con.sql(f"SELECT i, ai_query('tails', {q}, responseFormat => '{fmt}'), "
                         f"ai_query('recompute', {q}, responseFormat => '{fmt}') "
                         "FROM t ORDER BY i").fetchall()
        print("SCORES", json.dumps(scores), flush=True)
    """)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0
    [line] = [line for line in out.splitlines() if line.startswith("ROWS ")]
    rows = json.loads(line[5:])
    assert len(rows) == 64 and all(a for _, a, _ in rows)
    assert [a for _, a, _ in rows] == [b for _, _, b in rows]
    [line] = [line for line in out.splitlines() if line.startswith("SCORES ")]
    scores = [(json.loads(a), json.loads(b)) for _, a, b in json.loads(line[7:])]
    assert len(scores) == 64
    for a, b in scores:
        assert a["label"] == b["label"]
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-4)
