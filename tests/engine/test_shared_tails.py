"""The shared-tails KV connector's two halves without vLLM: which rows load a kept block and
which rows' blocks are kept (the scheduler's side), and the copies (the worker's side)."""

from __future__ import annotations

import torch

from ai_query.engine.vllm.compat.shared_tails import TailPlanner, TailSteps, TailStore

BS = 8
INSTRUCTION = list(range(100, 113))  # 13 tokens: one full block, then 5 in the partial one


def prompt(row: int) -> list[int]:
    return [*INSTRUCTION, 900 + row, 901, 902]


def live(*_: object) -> bool:
    return True


def planner_with_source(capacity: int = 4, is_live=live) -> TailPlanner:  # type: ignore[no-untyped-def]
    """Row 0 computed from 8 (block 0 cached) in a first step: the source of its block 1."""
    planner = TailPlanner(BS, capacity, is_live)
    assert planner.match("r0", prompt(0), 8, "h0") == 0
    planner.allocated("r0", [10, 11], 0)
    assert planner.step({"r0": len(prompt(0)) - 8}) == TailSteps(), "nothing copied yet"
    return planner


def test_rows_in_the_sources_step_wait_later_rows_get_its_block_copied_once() -> None:
    planner = TailPlanner(BS, 4, live)
    assert planner.match("r0", prompt(0), 8, "h0") == 0
    planner.allocated("r0", [10, 11], 0)
    assert planner.match("r1", prompt(1), 8, "h0") is None, "r0 computes it in this step"
    planner.step({"r0": len(prompt(0)) - 8})
    # Next step: rows 1 and 2 share the instruction's 5 tokens of block 1 with row 0.
    assert planner.match("r1", prompt(1), 8, "h0") == 5
    planner.allocated("r1", [10, 21], 5)
    assert planner.match("r2", prompt(2), 8, "h0") == 5
    planner.allocated("r2", [10, 31], 5)
    steps = planner.step({"r1": 3, "r2": 3})
    assert steps == TailSteps(saves=[(0, 11)], loads=[(0, 21), (0, 31)])
    assert planner.match("r3", prompt(3), 8, "h0") == 5
    planner.allocated("r3", [10, 41], 5)
    assert planner.step({"r3": 3}) == TailSteps(loads=[(0, 41)]), "the copy, not r0's block"
    assert planner.loaded_tokens == 15


def test_a_table_of_unique_rows_copies_nothing() -> None:
    planner = TailPlanner(BS, 4, live)
    for row in range(6):
        unique = [*INSTRUCTION[:8], 300 + row, 1, 2, 3, 4, 5]
        assert planner.match(f"r{row}", unique, 8, "h0") == 0
        planner.allocated(f"r{row}", [10, 11 + row], 0)
        assert planner.step({f"r{row}": 6}) == TailSteps()


def test_another_parent_block_or_too_few_shared_tokens_load_nothing() -> None:
    planner = planner_with_source()
    assert planner.match("other", prompt(1), 8, "h-other") == 0, "other tokens before the block"
    few = [*INSTRUCTION[:10], 7, 7, 7, 7, 7]  # shares 2 tokens of block 1 (< MIN_SHARED_TOKENS)
    assert planner.match("few", few, 8, "h0") == 0


def test_a_row_always_computes_its_last_prompt_token() -> None:
    planner = planner_with_source()
    same = prompt(0)[:-1]  # all its tokens after 8 are in row 0's block
    assert planner.match("same", same, 8, "h0") == len(same) - 1 - 8


def test_a_source_whose_block_is_not_computed_in_its_step_or_no_longer_held_gives_nothing() -> None:
    planner = TailPlanner(BS, 4, live)
    planner.match("r0", prompt(0), 8, "h0")
    planner.allocated("r0", [10, 11], 0)
    planner.step({"r0": 3})  # a chunked prefill stopped inside the block
    assert planner.match("r1", prompt(1), 8, "h0") == 0
    held: list[bool] = [True]
    planner = planner_with_source(is_live=lambda *_: held[0])
    held[0] = False  # preempted: its blocks were freed
    assert planner.match("r1", prompt(1), 8, "h0") == 0
    planner = planner_with_source()
    planner.finished("r0")
    planner.step({})  # a step after the one that freed it: its block may be overwritten
    assert planner.match("r1", prompt(1), 8, "h0") == 0


def test_a_copy_outlives_its_source_and_the_least_recently_used_is_dropped() -> None:
    planner = TailPlanner(BS, 2, live)
    for k in range(3):
        parent = f"h{k}"
        planner.match(f"s{k}", prompt(k), 8, parent)
        planner.allocated(f"s{k}", [10, 11 + k], 0)
        planner.step({f"s{k}": 8})
        assert planner.match(f"r{k}", prompt(9), 8, parent) == 5
        planner.allocated(f"r{k}", [10, 20 + k], 5)
        steps = planner.step({f"r{k}": 3})
        planner.finished(f"s{k}")
    assert steps.drops == [0]
    assert planner.match("again", prompt(5), 8, "h0") == 0, "dropped: nothing to load"
    assert planner.match("kept", prompt(5), 8, "h1") == 5, "copied aside: its source is done"


def test_the_store_copies_every_layer_of_a_block_aside_and_into_another() -> None:
    layers = {f"l{i}": torch.randn(6, 2, BS, 4) for i in range(3)}
    layers["tied"] = layers["l0"]  # layers that share one tensor are copied once
    store = TailStore()
    store.register(layers)
    assert len(store.layers) == 3
    before = [t[2].clone() for t in store.layers]
    store.run(TailSteps(saves=[(7, 2)], loads=[(7, 4)]))
    for t in store.layers:
        t[2].zero_()  # the source's block is freed and reused
    store.run(TailSteps(loads=[(7, 5)]))
    assert all(torch.equal(t[4], b) and torch.equal(t[5], b)
               for t, b in zip(store.layers, before, strict=True))
    store.run(TailSteps(drops=[7]))
    assert store._blocks == {}


def test_a_freed_block_is_copied_aside_before_a_load_into_it() -> None:
    layers = {"l0": torch.zeros(6, 2, BS, 4)}
    store = TailStore()
    store.register(layers)
    layers["l0"][2] = 2.0  # a finished source's block, freed; kept copy 0 is ones
    store.run(TailSteps(saves=[(0, 1)]))
    layers["l0"][1] = 1.0
    store.run(TailSteps(saves=[(0, 1)]))
    store.run(TailSteps(rescues=[(1, 2)], loads=[(0, 2), (1, 3)]))
    assert torch.equal(layers["l0"][3], torch.full((2, BS, 4), 2.0))
    assert torch.equal(layers["l0"][2], torch.ones(2, BS, 4))


def test_a_block_loaded_in_a_step_is_copied_aside_after_its_load() -> None:
    layers = {"l0": torch.zeros(6, 2, BS, 4)}
    store = TailStore()
    store.register(layers)
    layers["l0"][1] = 1.0
    store.run(TailSteps(saves=[(0, 1)], loads=[(0, 4)]))
    layers["l0"][2] = 0.0  # a resumed source's new block: it loads kept copy 0 in this step,
    # and another row wants it in the same step (copied aside as 1)
    store.run(TailSteps(saves=[(1, 2)], loads=[(0, 2), (1, 3)]))
    assert torch.equal(layers["l0"][3], torch.ones(2, BS, 4))


def test_importing_the_module_does_not_import_vllm_and_only_the_connector_is_built() -> None:
    import subprocess
    import sys

    code = ("import sys, ai_query.engine.vllm.compat.shared_tails as m; "
            "assert 'vllm' not in sys.modules; "
            "print(hasattr(m, 'Other'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_source_that_finished_in_the_last_step_gives_its_freed_block_in_this_one_only() -> None:
    """A label score's read generates one token: it finishes in the step that computes its
    block. Rows that waited for it get the block, copied aside before anything else in the
    next step (it is free: a load or the forward pass may overwrite it); later rows do not."""
    planner = planner_with_source()
    planner.finished("r0", [10, 11], 16)  # it held block 11 to the end
    assert planner.match("r1", prompt(1), 8, "h0") == 5
    planner.allocated("r1", [10, 11], 5)  # r1 got the freed block 11: the rescue comes first
    assert planner.match("r2", prompt(2), 8, "h0") == 5
    planner.allocated("r2", [10, 21], 5)
    assert planner.step({"r1": 3, "r2": 3}) == TailSteps(rescues=[(0, 11)],
                                                         loads=[(0, 11), (0, 21)])
    assert planner.match("r3", prompt(3), 8, "h0") == 5, "the copy aside stays"
    planner = planner_with_source()
    planner.finished("r0", [10, 11], 16)
    assert planner.step({}) == TailSteps(), "no row wanted it in the next step"
    assert planner.match("r1", prompt(1), 8, "h0") == 0, "its block may be overwritten now"


def test_a_source_block_lost_to_a_preemption_is_not_copied_when_its_row_finishes() -> None:
    planner = planner_with_source()
    planner.finished("r0", [10, 12], 16)  # preempted: block 11 freed (maybe reused), 12 now
    assert planner.match("r1", prompt(1), 8, "h0") == 0
    planner = planner_with_source()
    planner.finished("r0", [10, 11], 12)  # block 11 again, but not yet computed again
    assert planner.match("r1", prompt(1), 8, "h0") == 0


def test_a_row_waits_one_step_at_most_for_a_source() -> None:
    """Sources that never give their block (each prefill stops inside it, or the row is
    preempted): the rows that waited compute their own block instead of waiting again, one
    row a step."""
    planner = TailPlanner(BS, 4, lambda *_: False)
    assert planner.match("r0", prompt(0), 8, "h0") == 0
    planner.allocated("r0", [10, 11], 0)
    waiting = [f"r{k}" for k in range(1, 5)]
    assert [planner.match(r, prompt(1), 8, "h0") for r in waiting] == [None] * 4
    planner.step({"r0": 7})  # one token short of its block
    assert planner.match("r1", prompt(1), 8, "h0") == 0, "the first becomes a source"
    planner.allocated("r1", [10, 21], 0)
    assert [planner.match(r, prompt(1), 8, "h0") for r in waiting[1:]] == [0] * 3
    assert planner.match("new", prompt(6), 8, "h0") is None, "a row that has not waited does"
    planner.step({"r1": 7})
    longer = [*prompt(2), 903, 904, 905, 906, 907, 908]  # its next block: it may wait for it
    assert planner.match("r2", longer, 16, "h1") == 0
    planner.allocated("r2", [10, 11, 22], 0)
    assert planner.match("r3", longer, 16, "h1") is None
