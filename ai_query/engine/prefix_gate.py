"""Shared-prefix staging: a long prompt prefix is computed once, then reused by every row.

Batch prompts often share a long prefix (an instruction or few-shot block, then the row's
text). vLLM's prefix cache only helps a request whose prefix blocks were computed before it was
scheduled: when hundreds of such rows arrive together, the scheduler takes many of them in the
same steps and each computes the same prefix. :class:`PrefixGate` stages them: the first request
with a long prefix leads; a request whose prompt starts with at least ``min_blocks`` full blocks
that a leader in flight is still computing waits until that leader's prefill is done (its first
token), then goes and finds those blocks in vLLM's cache. Prompts that share less than
``min_blocks`` blocks with anything in flight (unique prompts, a short chat-template preamble)
never wait.

Blocks are keyed as vLLM keys them: a hash chained over the full blocks of token ids, so a key
names a block *and* everything before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Lead:
    """A leading request: the block keys it computes, released when its prefill is done."""

    gate: PrefixGate
    keys: list[int]
    done: asyncio.Future[None]

    def release(self) -> None:
        """The prefix is computed (or the request ended): let the waiting requests go."""
        self.gate.release(self)


class PrefixGate:
    """Holds back requests whose long prefix a request in flight is computing."""

    def __init__(self, block_size: int, min_blocks: int) -> None:
        self.block_size = block_size
        """Tokens per KV-cache block (the engine's)."""
        self.min_blocks = max(1, min_blocks)
        """Shared full blocks that are worth waiting for."""
        self._computing: dict[int, asyncio.Future[None]] = {}
        self.waited = 0
        """Requests that waited for a leader (for tests and benchmarks)."""

    def block_keys(self, token_ids: Sequence[int]) -> list[int]:
        """Chained keys of the prompt's full blocks that a cache hit can cover (the block with
        the last prompt token is always computed)."""
        size = self.block_size
        keys: list[int] = []
        key = 0
        for start in range(0, ((len(token_ids) - 1) // size) * size, size):
            key = hash((key, tuple(token_ids[start : start + size])))
            keys.append(key)
        return keys

    async def enter(self, keys: list[int]) -> Lead | None:
        """Wait while a leader computes at least ``min_blocks`` of these blocks.

        Returns a :class:`Lead` when this request leads (call its ``release`` once its first
        token is out, and in any case when it ends), else None.
        """
        if len(keys) < self.min_blocks:
            return None
        for depth in range(len(keys) - 1, self.min_blocks - 2, -1):
            found = self._computing.get(keys[depth])
            if found is not None:
                self.waited += 1
                await asyncio.shield(found)
                return None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        claimed = [k for k in keys[self.min_blocks - 1 :] if k not in self._computing]
        for key in claimed:
            self._computing[key] = done
        return Lead(self, claimed, done)

    def release(self, lead: Lead) -> None:
        """End ``lead``: its blocks are cached; its followers go (idempotent)."""
        for key in lead.keys:
            if self._computing.get(key) is lead.done:
                del self._computing[key]
        if not lead.done.done():
            lead.done.set_result(None)
