"""Choosing a label with a calibrated confidence, for the label-shaped task functions.

Two scorers, combined as a product of experts (their log-scores added, then normalised):

- the chat endpoint's own log-probability of each whole label as the answer to the prompt
  (:meth:`~ai_query.engine.backends.backend.Backend.score_choices`), corrected for the model's
  prior over the labels by contextual calibration: the same prompt with a content-free text
  (:data:`CONTENT_FREE`, averaged) is scored too, and its log-probabilities are subtracted;
- the catalog's embeddings endpoint (the one ``ai_similarity`` uses): the cosine of the text
  against each label (with its description where one is given), less the same cosine for the
  content-free texts, divided by :data:`EMBEDDING_TEMPERATURE`.

The content-free prompts and the label embeddings are the same for every row of a call, so the
engine's memo answers them once per prompt template. Where the chat endpoint gives no
probabilities (an external provider), its generated label is the answer and the confidence is
NULL. The method and its two constants were chosen on ``bench/data`` (see
``bench/task_quality.py``), for any labels and any pair of chat and embeddings models.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ai_query.options import CallOptions

#: Texts that carry no content: the model's answer to them is its prior over the labels.
CONTENT_FREE: tuple[str, ...] = ("N/A", "", "[MASK]")
#: The softmax temperature of cosine similarities (MiniLM-like models spread related texts over
#: a few hundredths of cosine).
EMBEDDING_TEMPERATURE = 0.05

#: Runs one request batch and returns its results, one per request (``task_rows._run``).
Run = Callable[[list[str | None], CallOptions], list[Any]]


@dataclass(frozen=True)
class LabelChoice:
    """The chosen label and how sure the scorers are."""

    label: str
    """One of the labels."""
    confidence: float | None
    """The chosen label's probability (0-1); None when no scorer gave probabilities."""
    probabilities: tuple[float, ...] = ()
    """Every label's probability, in label order (empty when no scorer gave them)."""

    def fitting(self, labels: Sequence[str], share: float) -> list[tuple[str, float | None]]:
        """(label, probability) of every label whose probability is at least ``share`` of the
        chosen one's, most probable first; the chosen label alone without probabilities."""
        if not self.probabilities:
            return [(self.label, None)]
        best = max(self.probabilities)
        found = [(p, label) for label, p in zip(labels, self.probabilities, strict=True)]
        return [(label, p) for p, label in sorted(found, reverse=True) if p >= share * best]


def choose_labels(
    run: Run,
    labels: Sequence[str],
    prompts: Sequence[str],
    content_free_prompts: Sequence[str],
    chat: CallOptions,
    contents: Sequence[str] | None = None,
    label_texts: Sequence[str] | None = None,
    embeddings: str | None = None,
) -> list[LabelChoice]:
    """A label per prompt (each prompt not None).

    Args:
        run: runs a request batch (see :data:`Run`).
        labels: the labels, in the order of the choice in ``chat``'s responseFormat.
        prompts: each row's chat prompt.
        content_free_prompts: the prompt template filled with each of :data:`CONTENT_FREE`.
        chat: the chat call, its responseFormat a choice of ``labels`` answering with scores.
        contents: each row's text, for the embeddings scorer.
        label_texts: what each label means, for the embeddings scorer.
        embeddings: the embeddings endpoint, or None for the chat scorer alone.
    """
    answers = [json.loads(a) for a in run([*prompts, *content_free_prompts], chat)]
    rows, prior = answers[: len(prompts)], answers[len(prompts) :]
    if any(a["logprobs"] is None for a in answers):  # generated: the model's own answer
        return [LabelChoice(a["label"], None) for a in rows]
    llm = np.array([a["logprobs"] for a in rows], dtype=np.float64)
    logits = llm - np.array([a["logprobs"] for a in prior], dtype=np.float64).mean(axis=0)
    if embeddings is not None and contents is not None and label_texts is not None:
        logits += _embedding_logits(run, embeddings, contents, label_texts)
    probs = _softmax(logits)
    best = probs.argmax(axis=1)
    return [
        LabelChoice(labels[int(b)], float(p[b]), tuple(float(x) for x in p))
        for b, p in zip(best, probs, strict=True)
    ]


def _embedding_logits(
    run: Run, endpoint: str, contents: Sequence[str], label_texts: Sequence[str]
) -> np.ndarray:
    texts = [*contents, *label_texts, *CONTENT_FREE]
    vectors = np.array(run(list(texts), CallOptions(endpoint=endpoint)), dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    n, k = len(contents), len(label_texts)
    rows, label_vectors, blank = vectors[:n], vectors[n : n + k], vectors[n + k :]
    prior = (blank @ label_vectors.T).mean(axis=0)
    return (rows @ label_vectors.T - prior) / EMBEDDING_TEMPERATURE


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
