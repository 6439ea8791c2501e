"""The model's own log-probability of each whole label, in one pass over a shared prompt.

Labels are tokenized as the start of the assistant's answer and put in a trie. Each inner node
of the trie (the empty prefix first) is one vLLM request: the prompt, then the node's tokens,
asking for one token with ``logprob_token_ids`` set to the node's children, so vLLM returns the
log-probability of exactly those tokens (not of the top-k). A label's score is the sum along its
path, plus the end-of-answer token where a label is also the start of a longer label. Tokens
that every label starts with (an answer prefix such as "The sentiment is") are not read: they
add the same to every score, so the scores are log-probabilities up to that constant. Every
request shares the prompt's KV blocks (prefix caching), so 500 labels cost one prefill of the
prompt and a one-token step per trie node, not 500 generations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ai_query.errors import RowFailure

#: A label's tokens, and where its score is read.
TokenPath = tuple[int, ...]


@dataclass(frozen=True)
class LabelTrie:
    """The labels' token paths and the requests that score them."""

    paths: tuple[TokenPath, ...]
    """Each label's tokens, in label order."""
    end_token: int
    """The token that ends an answer (read where one label is a prefix of another)."""
    nodes: dict[TokenPath, tuple[int, ...]] = field(default_factory=dict)
    """Inner node (a proper prefix of some label) -> the tokens to read there."""
    root: TokenPath = ()
    """The tokens every label starts with: the first node read."""

    @classmethod
    def build(cls, paths: Sequence[TokenPath], end_token: int) -> LabelTrie:
        """The trie of ``paths`` (each non-empty)."""
        if any(not p for p in paths):
            raise RowFailure("an answer to choose has no tokens")
        children: dict[TokenPath, set[int]] = {}
        for path in paths:
            for depth in range(len(path)):
                children.setdefault(path[:depth], set()).add(path[depth])
        ends = {p for p in paths if p in children}  # a label that is a prefix of another
        root = _common_prefix(paths)
        nodes = {
            prefix: tuple(sorted(tokens | ({end_token} if prefix in ends else set())))
            for prefix, tokens in children.items()
            if len(prefix) >= len(root)
        }
        return cls(tuple(paths), end_token, nodes, root)

    def scores(self, read: dict[TokenPath, dict[int, float]]) -> list[float]:
        """Each label's log-probability from the log-probabilities read at each node."""
        out = []
        for path in self.paths:
            total = sum(read[path[:d]][path[d]] for d in range(len(self.root), len(path)))
            if path in self.nodes:
                total += read[path][self.end_token]
            out.append(total)
        return out


def _common_prefix(paths: Sequence[TokenPath]) -> TokenPath:
    first = paths[0]
    n = min(len(p) for p in paths)
    for i in range(n):
        if any(p[i] != first[i] for p in paths):
            return first[:i]
    return first[:n]
