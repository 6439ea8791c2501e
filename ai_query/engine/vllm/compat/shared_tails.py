"""Rows behind a shared instruction share its last, partial KV block: a vLLM KV connector.

vLLM's prefix cache hits whole KV blocks (32 tokens on a CPU). Rows that share an instruction
hit its full blocks, and each recomputes the instruction's last, partial block with its own
text: up to 31 tokens a row, through every layer, attending over the whole instruction. On the
bundled model, 256 rows behind a 1,332-token instruction computed 32.6 tokens each against 17.8
for the same rows alone (``bench/prefix_profile.py``).

This connector lets rows share that block. A row whose cached prefix ends at a block boundary
computes the block after it, and is that block's source. A later row whose cached prefix ends
at the same place (the same hash of the block before it: the same tokens before, the same
positions) and whose next tokens start as the source's do gets the source's block copied into
its own new block, and vLLM counts the tokens it shares with the source as computed: the row
computes only its own text. The copy is taken from the source's block while that row runs,
once, when a second row first wants it, and kept aside (least recently used dropped) for the
rows after: tables of unique prompts copy nothing. Rows that would match a block being computed
in this step wait for the next one (the connector's ``None``), so a table's first step has one
source per instruction instead of many rows that each recompute the same tokens; a row waits
once at most for each block. Rows in flight together share: a source that finished in a step
(a label score's read generates one token, so it finishes in the step that computes its
prompt) has its block copied aside at the start of the next step, before that step's copies
into rows and its forward pass can overwrite the freed block; a block whose source finished
before then is gone. Before, 512 ``ai_filter`` rows behind one predicate entered the engine
one row a step, each waiting for a source that was gone by the next: 36 s against 18 s with
the connector off (the real engine, 2-core AMD EPYC).

The KV is the same as recomputing it: in float32 the answers are identical, token for token; in
bfloat16 a recomputed row and a copied one differ as rows computed in different batches do.
Requests with images, LoRA adapters, a cache salt, prompt log-probs or no prompt tokens are
left to vLLM. Models with more than one KV cache group (hybrid, sliding window) are left alone.

:class:`TailPlanner` (the scheduler's side) and :class:`TailStore` (the worker's) are plain
Python and torch; the vLLM class that joins them, ``SharedTailConnector``, is built on first
access (vLLM's connector factory imports this module and reads the attribute), so importing
this module does not import vLLM.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Fewest shared tokens worth a copy (fewer are not worth a block copy and its bookkeeping).
MIN_SHARED_TOKENS = 4
#: Bytes of copied blocks kept per engine (least recently used dropped first), and the fewest
#: blocks kept whatever their size.
STORE_BYTES = 64 << 20
MIN_BLOCKS = 8
#: The engine argument that turns it on (``kv_transfer_config``).
SHARED_TAILS = {"kv_connector": "SharedTailConnector", "kv_role": "kv_both",
                "kv_connector_module_path": __name__}
#: Blocks of running rows remembered per (parent key, first tokens), newest kept.
SOURCES_PER_KEY = 4
#: The parent key of a prompt's first block.
ROOT: Hashable = ("ai_query", "root")


def shared_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class TailSteps:
    """What the worker does at the start of one step, before the forward pass (the connector's
    metadata, picklable): copy the blocks of sources that finished in the last step aside
    (``rescues``: store id, block id; first, as those blocks are free now), copy source blocks
    aside (``saves``), copy kept blocks into rows' new blocks (``loads``: store id, block id),
    free store ids (``drops``)."""

    rescues: list[tuple[int, int]] = field(default_factory=list)
    saves: list[tuple[int, int]] = field(default_factory=list)
    loads: list[tuple[int, int]] = field(default_factory=list)
    drops: list[int] = field(default_factory=list)


@dataclass
class _Source:
    """A block a row computed, starting where its cached prefix ended: what other rows may get."""

    request_id: str
    tokens: tuple[int, ...]
    """The prompt tokens it holds."""
    index: int
    """Its place in the row's blocks."""
    block_id: int = -1
    store_id: int | None = None
    """Where it was copied aside once another row wanted it (None: not yet)."""
    freed: bool = False
    """Its row finished in the last step: its block is free but still holds what it computed
    until this step's copies and forward pass."""


#: Still the source's: whether the block of a running row still holds what it computed
#: (``is_live(request_id, index, block_id, end)``; a preempted row's blocks are freed).
IsLive = Callable[[str, int, int, int], bool]


class TailPlanner:
    """The scheduler's side: which rows get a block from an earlier row, which blocks are copied
    aside. A block is copied aside only when a second row wants it (tables of unique prompts
    copy nothing), from its source's own block while that row runs; later rows get the copy."""

    def __init__(self, block_size: int, capacity: int, is_live: IsLive) -> None:
        self.block_size = block_size
        self.capacity = capacity
        self.is_live = is_live
        self._sources: dict[Hashable, list[_Source]] = {}
        """(parent key, first tokens) -> blocks computed in earlier steps, copied aside or by
        running rows (the newest few)."""
        self._kept: OrderedDict[int, tuple[Hashable, _Source]] = OrderedDict()
        """Store id -> its source (least recently used first)."""
        self._next_id = 0
        self._matched: dict[str, tuple[_Source, Hashable]] = {}
        """Request id -> the block it gets, or would be the source of (this step)."""
        self._pending: dict[Hashable, list[_Source]] = {}
        """This step's new sources, by key."""
        self._keys_of: dict[str, list[Hashable]] = {}
        """Request id -> the keys its blocks are known by."""
        self._freed: list[tuple[Hashable, _Source]] = []
        """Sources whose rows finished since the last step (usable in the next step only)."""
        self._waited: dict[str, int] = {}
        """Request id -> the block it last waited a step for (it does not wait for it again)."""
        self._steps = TailSteps()
        self.loaded_tokens = 0
        """Tokens rows got from other rows' blocks instead of computing them (since the start)."""

    def match(self, request_id: str, tokens: Sequence[int], computed: int,
              parent: Hashable) -> int | None:
        """Tokens after ``computed`` (block-aligned: the prefix cache's hit) that the request
        gets from an earlier row's block; None to ask again next step (such a block is being
        computed in this one; a row waits once at most for each of its blocks)."""
        segment = tuple(tokens[computed : computed + self.block_size])
        if len(segment) < MIN_SHARED_TOKENS:
            return 0
        key = (parent, segment[:MIN_SHARED_TOKENS])
        index = computed // self.block_size
        best, found = 0, None
        for source in self._sources.get(key, ()):
            if source.store_id is None and not source.freed and not self.is_live(
                    source.request_id, source.index, source.block_id,
                    source.index * self.block_size + len(source.tokens)):
                continue
            if (n := shared_length(segment, source.tokens)) > best:
                best, found = n, source
        usable = min(best, len(tokens) - 1 - computed)  # vLLM computes at least one token
        if found is not None and usable >= MIN_SHARED_TOKENS:
            self._matched[request_id] = (found, key)
            return usable
        if self._waited.get(request_id) != index and any(
                s.request_id != request_id for s in self._pending.get(key, ())):
            self._waited[request_id] = index
            return None
        self._matched[request_id] = (_Source(request_id, segment, index), key)
        return 0

    def allocated(self, request_id: str, block_ids: Sequence[int], loaded: int) -> None:
        """The request got its blocks, ``loaded`` tokens counted as computed by this connector."""
        matched = self._matched.pop(request_id, None)
        if matched is None:
            return
        source, key = matched
        if source.request_id == request_id and loaded == 0:
            source.block_id = block_ids[source.index]
            self._pending.setdefault(key, []).append(source)
        elif source.request_id != request_id and loaded > 0:
            if source.store_id is None:
                source.store_id, self._next_id = self._next_id, self._next_id + 1
                copies = self._steps.rescues if source.freed else self._steps.saves
                copies.append((source.store_id, source.block_id))
                self._kept[source.store_id] = (key, source)
            self._kept.move_to_end(source.store_id)
            self._steps.loads.append((source.store_id, block_ids[source.index]))
            self.loaded_tokens += loaded

    def finished(self, request_id: str, block_ids: Sequence[int] = (), computed: int = 0) -> None:
        """The request is done: its blocks are freed (copies aside stay). A source block it
        still held at the end (``block_ids``: its blocks then, ``computed``: its computed
        tokens) can still be copied aside, in the next step only; one it lost to a preemption
        (freed, maybe reused, not yet computed again) is forgotten."""
        self._waited.pop(request_id, None)
        for key in self._keys_of.pop(request_id, ()):
            for source in list(self._sources.get(key, ())):
                if source.request_id != request_id or source.store_id is not None:
                    continue
                end = source.index * self.block_size + len(source.tokens)
                if (source.index < len(block_ids) and block_ids[source.index] == source.block_id
                        and computed >= end):
                    source.freed = True
                    self._freed.append((key, source))
                else:
                    self._forget(key, source)

    def _forget(self, key: Hashable, source: _Source) -> None:
        if key in self._sources and source in self._sources[key]:
            self._sources[key].remove(source)
            if not self._sources[key]:
                del self._sources[key]

    def step(self, scheduled: Mapping[str, int]) -> TailSteps:
        """This step's work for the worker; ``scheduled``: tokens scheduled per request. A new
        source counts from the next step if this one computes all its prompt tokens."""
        for key, sources in self._pending.items():
            done = [s for s in sources if scheduled.get(s.request_id, 0) >= len(s.tokens)]
            if not done:
                continue
            known = self._sources.setdefault(key, [])
            known.extend(done)
            for source in done:
                self._keys_of.setdefault(source.request_id, []).append(key)
            running = [s for s in known if s.store_id is None]
            for old in running[:-SOURCES_PER_KEY]:
                known.remove(old)
        steps, self._steps = self._steps, TailSteps()
        for key, source in self._freed:  # this step's forward pass may overwrite their blocks
            if source.store_id is None:
                self._forget(key, source)
        self._freed = []
        while len(self._kept) > self.capacity:
            store_id, (key, source) = self._kept.popitem(last=False)
            self._forget(key, source)
            steps.drops.append(store_id)
        self._pending, self._matched = {}, {}
        return steps


class TailStore:
    """The worker's side: blocks copied aside, every layer's KV of one block each."""

    def __init__(self) -> None:
        self.layers: list[Any] = []
        self._blocks: dict[int, Any] = {}

    def register(self, kv_caches: Mapping[str, Any]) -> None:
        """vLLM's KV cache tensors, one per attention layer (block index first); layers that
        share one tensor are copied once."""
        seen: set[int] = set()
        for tensor in kv_caches.values():
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                self.layers.append(tensor)

    def run(self, steps: TailSteps) -> None:
        """Before the forward pass: first the blocks of sources that finished in the last step
        copied aside (they are free: a load in this step may go into one), then kept blocks
        into the rows' new blocks (the row's own tokens then overwrite the rest of the block),
        sources' blocks copied aside in this step after the others' loads (a source that
        resumed after a preemption may load its own block in this step), then drops."""
        import torch

        def save(copies: Sequence[tuple[int, int]]) -> None:
            for store_id, block_id in copies:
                self._blocks[store_id] = torch.stack([layer[block_id] for layer in self.layers])

        save(steps.rescues)
        new = {store_id for store_id, _ in steps.saves}
        self._load([load for load in steps.loads if load[0] not in new])
        save(steps.saves)
        self._load([load for load in steps.loads if load[0] in new])
        for store_id in steps.drops:
            self._blocks.pop(store_id, None)

    def _load(self, loads: Sequence[tuple[int, int]]) -> None:
        for store_id, block_id in loads:
            kept = self._blocks[store_id]
            for i, layer in enumerate(self.layers):
                layer[block_id].copy_(kept[i])


def block_bytes(kv_cache_config: Any) -> int:
    """Bytes of one block across every layer."""
    group = kv_cache_config.kv_cache_groups[0]
    return int(group.kv_cache_spec.page_size_bytes) * len(group.layer_names)


def _connector_class() -> type:
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    class SharedTailConnector(KVConnectorBase_V1):  # type: ignore[misc]
        """vLLM's side of :class:`TailPlanner` and :class:`TailStore` (see the module)."""

        def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None) -> None:
            super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
            groups = kv_cache_config.kv_cache_groups if kv_cache_config is not None else []
            self.enabled = len(groups) == 1 and type(groups[0].kv_cache_spec) is FullAttentionSpec
            capacity = MIN_BLOCKS
            if self.enabled:
                capacity = max(MIN_BLOCKS, STORE_BYTES // block_bytes(kv_cache_config))
            self.planner = TailPlanner(vllm_config.cache_config.block_size, capacity,
                                       self._is_live)
            self.store = TailStore()
            self._requests: dict[str, Any] = {}
            self._manager: Any = None

        # -- scheduler
        def bind_kv_cache_manager(self, kv_cache_manager: Any) -> None:
            self._manager = kv_cache_manager

        def _is_live(self, request_id: str, index: int, block_id: int, end: int) -> bool:
            request = self._requests.get(request_id)
            if (request is None or self._manager is None or request.is_finished()
                    or request.num_computed_tokens < end):
                return False  # gone, or preempted (its blocks freed) and not yet recomputed
            try:
                block_ids = self._manager.get_block_ids(request_id)[0]
            except KeyError:
                return False
            return index < len(block_ids) and block_ids[index] == block_id

        def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> Any:
            params = request.sampling_params
            if (not self.enabled or request.prompt_token_ids is None or request.mm_features
                    or request.lora_request is not None or request.cache_salt is not None
                    or request.skip_reading_prefix_cache or params is None
                    or params.prompt_logprobs is not None):
                return 0, False
            self._requests[request.request_id] = request
            k = num_computed_tokens // self.planner.block_size
            parent = request.block_hashes[k - 1] if k else ROOT
            found = self.planner.match(request.request_id, request.prompt_token_ids,
                                       num_computed_tokens, parent)
            return found, False

        def update_state_after_alloc(self, request: Any, blocks: Any,
                                     num_external_tokens: int) -> None:
            self.planner.allocated(request.request_id, blocks.get_block_ids()[0],
                                   num_external_tokens)

        def build_connector_meta(self, scheduler_output: Any) -> Any:
            return self.planner.step(scheduler_output.num_scheduled_tokens)

        def request_finished(self, request: Any, block_ids: Any) -> tuple[bool, None]:
            self._requests.pop(request.request_id, None)
            self.planner.finished(request.request_id, block_ids, request.num_computed_tokens)
            return False, None

        # -- worker
        def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
            self.store.register(kv_caches)

        def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
            self.store.run(self._get_connector_metadata())

        def wait_for_layer_load(self, layer_name: str) -> None:
            return None

        def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any,
                          **kwargs: Any) -> None:
            return None

        def wait_for_save(self) -> None:
            return None

    return SharedTailConnector


_built: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name != "SharedTailConnector":
        raise AttributeError(name)
    if name not in _built:
        _built[name] = _connector_class()
    return _built[name]
