"""Choosing a label with a calibrated confidence, for the label-shaped task functions.

Two scorers, combined as a product of experts (their log-scores added, then normalised):

- the chat endpoint's own log-probability of each whole label as the answer to the prompt
  (:meth:`~ai_query.engine.backends.backend.Backend.score_choices`), corrected for the model's
  prior over the labels by contextual calibration: the same prompt with a content-free text
  (:data:`CONTENT_FREE`, averaged) is scored too, and its log-probabilities are subtracted;
- the catalog's embeddings endpoint (the one ``ai_similarity`` uses): the cosine of the text
  against each label (with its description where one is given), less the same cosine for the
  content-free texts, divided by :data:`EMBEDDING_TEMPERATURE`.

Then, where a call has at least :data:`ROWS_PER_LABEL` rows per label, the batch refines the
labels (a transductive step, as BigQuery's optimized mode learns from the rows it labels): each
label's centroid is the mean of the rows' text embeddings weighted by their probability of that
label, and every row's cosine to each centroid (less its mean over the rows), over
:data:`REFINE_TEMPERATURE`, joins the log-scores once more. The summed log-scores are divided by
:data:`CALIBRATION_TEMPERATURE` before they are normalised (temperature scaling: the experts'
sum, the refinement above all, is over-confident). A label's meaning is then drawn from
the table's own texts; a row's label can thus depend on the rows beside it (``scoring =>
'row'`` leaves the step out). The content-free prompts and the label embeddings are the same
for every row of a call, so the engine's memo answers them once per prompt template.

Where the chat endpoint gives no probabilities (an external provider), its generated label is
the answer and the confidence is NULL. The method and its constants were chosen on the tuning
sets of ``bench/data`` (see ``bench/task_quality.py``), for any labels and any pair of chat
and embeddings models.
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
#: The softmax temperature of cosine similarities to the batch's label centroids.
REFINE_TEMPERATURE = 0.1
#: The temperature of the combined log-scores (chosen on the tuning sets, where it brought the
#: largest expected calibration error of four sets from 0.20 to 0.12, the labels unchanged).
CALIBRATION_TEMPERATURE = 1.5
#: The batch refines the labels only with at least this many rows per label (fewer rows make
#: noisy centroids: with 1 row per label it cost 5-7 points of accuracy on the tuning sets).
ROWS_PER_LABEL = 4

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
    refine: bool = True,
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
        refine: let a large enough batch refine the labels (see the module's docstring).
    """
    answers = [json.loads(a) for a in run([*prompts, *content_free_prompts], chat)]
    rows, prior = answers[: len(prompts)], answers[len(prompts) :]
    if any(a["logprobs"] is None for a in answers):  # generated: the model's own answer
        return [LabelChoice(a["label"], None) for a in rows]
    llm = np.array([a["logprobs"] for a in rows], dtype=np.float64)
    logits = llm - np.array([a["logprobs"] for a in prior], dtype=np.float64).mean(axis=0)
    if embeddings is not None and contents is not None and label_texts is not None:
        scores, rows_vectors = _embedding_logits(run, embeddings, contents, label_texts)
        logits += scores
        if refine and len(contents) >= ROWS_PER_LABEL * len(labels):
            logits += _centroid_logits(rows_vectors, _softmax(logits))
    probs = _softmax(logits / CALIBRATION_TEMPERATURE)
    best = probs.argmax(axis=1)
    return [
        LabelChoice(labels[int(b)], float(p[b]), tuple(float(x) for x in p))
        for b, p in zip(best, probs, strict=True)
    ]


def _embedding_logits(
    run: Run, endpoint: str, contents: Sequence[str], label_texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings scorer's log-scores, and the rows' unit vectors."""
    texts = [*contents, *label_texts, *CONTENT_FREE]
    vectors = np.array(run(list(texts), CallOptions(endpoint=endpoint)), dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    n, k = len(contents), len(label_texts)
    rows, label_vectors, blank = vectors[:n], vectors[n : n + k], vectors[n + k :]
    prior = (blank @ label_vectors.T).mean(axis=0)
    return (rows @ label_vectors.T - prior) / EMBEDDING_TEMPERATURE, rows


def _centroid_logits(rows: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each row's cosine to each label's probability-weighted centroid of the rows, less its
    mean over the rows, over :data:`REFINE_TEMPERATURE`."""
    centroids = probs.T @ rows
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    cosines = rows @ centroids.T
    return (cosines - cosines.mean(axis=0)) / REFINE_TEMPERATURE


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
