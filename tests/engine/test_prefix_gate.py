"""Shared-prefix staging (ai_query.engine.prefix_gate): who waits, who leads, who never waits."""

from __future__ import annotations

import asyncio

from ai_query.engine.prefix_gate import PrefixGate

INSTRUCTION = list(range(1000, 1040))  # 10 blocks of 4 tokens


def _prompt(instruction: list[int], row: int) -> list[int]:
    return [*instruction, 7, row, row + 1, row + 2, 9]


def test_block_keys_chain_full_blocks_and_leave_the_last_token_out() -> None:
    gate = PrefixGate(block_size=4, min_blocks=2)
    assert len(gate.block_keys(list(range(8)))) == 1  # the block with the last token is computed
    assert len(gate.block_keys(list(range(9)))) == 2
    a, b = gate.block_keys([1, 2, 3, 4, 5, 6, 7, 8, 0]), gate.block_keys([9, 2, 3, 4, 5, 6, 7, 8, 0])
    assert a[1] != b[1], "a key names its block and everything before it"


def test_rows_sharing_a_long_prefix_wait_for_one_leader() -> None:
    async def scenario() -> list[str]:
        gate = PrefixGate(block_size=4, min_blocks=3)
        events: list[str] = []

        async def row(i: int, prefill_s: float) -> None:
            lead = await gate.enter(gate.block_keys(_prompt(INSTRUCTION, i)))
            events.append(f"{'lead' if lead else 'go'} {i}")
            if lead:
                await asyncio.sleep(prefill_s)
                events.append(f"prefilled {i}")
                lead.release()

        await asyncio.gather(*(row(i, 0.05) for i in range(5)))
        assert gate.waited == 4
        return events

    events = asyncio.run(scenario())
    assert events[:2] == ["lead 0", "prefilled 0"], "followers go only after the prefix is computed"
    assert sorted(events[2:]) == [f"go {i}" for i in range(1, 5)]


def test_different_instructions_lead_separately_and_unique_prompts_never_wait() -> None:
    async def scenario() -> tuple[int, int]:
        gate = PrefixGate(block_size=4, min_blocks=3)
        other = [t + 500 for t in INSTRUCTION]
        leads = [await gate.enter(gate.block_keys(_prompt(p, 0))) for p in (INSTRUCTION, other)]
        assert all(leads), "each instruction has its own leader"
        short = await gate.enter(gate.block_keys([1, 2, 3, 4, 5, 6, 7]))  # under min_blocks
        assert short is None
        for lead in leads:
            assert lead is not None
            lead.release()
        again = await gate.enter(gate.block_keys(_prompt(INSTRUCTION, 1)))
        return gate.waited, int(again is not None)

    waited, led_again = asyncio.run(scenario())
    assert waited == 0
    assert led_again == 1, "once released, a later row leads again (its blocks may be evicted)"


def test_a_failed_leader_still_releases_its_followers() -> None:
    async def scenario() -> int:
        gate = PrefixGate(block_size=4, min_blocks=2)
        keys = gate.block_keys(_prompt(INSTRUCTION, 0))
        lead = await gate.enter(keys)
        assert lead is not None
        follower = asyncio.ensure_future(gate.enter(gate.block_keys(_prompt(INSTRUCTION, 1))))
        await asyncio.sleep(0.01)
        assert not follower.done()
        lead.release()
        lead.release()  # idempotent (released on the first token and again when it ends)
        assert await asyncio.wait_for(follower, 1) is None
        return gate.waited

    assert asyncio.run(scenario()) == 1
