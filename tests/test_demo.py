from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console

from ai_query.demo import SENTIMENT_LABELS, run_demo, sample_reviews

VECTOR_PREVIEW = re.compile(r"\[-?\d\.\d{3}, -?\d\.\d{3}, -?\d\.\d{3}, …\] 384 dims")


def _run(rows: int, engine: object) -> tuple[str, dict[str, Any]]:
    out = io.StringIO()
    figures = run_demo(Console(file=out, width=80), rows=rows, engine=engine)
    return out.getvalue(), figures


def _shown_sentiment_labels(text: str) -> list[str]:
    """The model_label column of the printed sentiment table."""
    table = text.split("Sentiment (")[1].split("rows shown")[0]
    rows = [line.split("│") for line in table.splitlines() if line.startswith("│")]
    return [cells[-3].strip() for cells in rows]


def test_sample_table_is_deterministic() -> None:
    assert sample_reviews(100) == sample_reviews(100)
    assert len({r["review"] for r in sample_reviews(100)}) > 50
    assert {r["label"] for r in sample_reviews(100)} <= set(SENTIMENT_LABELS)


def test_demo_on_the_deterministic_engine(fake_engine) -> None:  # type: ignore[no-untyped-def]
    text, figures = _run(30, fake_engine)
    assert "One-line summary" in text and "Nearest reviews" in text and "Timing and tokens" in text
    assert figures["summaries"]["completion_tokens"] > 0
    too_wide = [line for line in text.splitlines() if cell_len(line) > 80]
    assert not too_wide
    assert VECTOR_PREVIEW.search(text)
    # One line per row: a review is cut short with an ellipsis, not folded into a tall column.
    assert "I love these wireless headphones" in text and "…" in text
    # Scored labels: only the four, each with its probability.
    assert figures["sentiment_type"] == "struct<label: string, confidence: double>"
    assert figures["sentiment_errors"] == 0
    assert set(figures["sentiment_labels"]) <= set(SENTIMENT_LABELS)
    shown = _shown_sentiment_labels(text)
    assert len(shown) == 8 and set(shown) <= set(SENTIMENT_LABELS)
    agree = sum(
        label == row["label"]
        for label, row in zip(figures["sentiment_labels"], sample_reviews(30), strict=True)
    )
    assert figures["sentiment_agree"] == agree
    assert f"agrees with the sample's own labels on {agree} of 30 reviews" in text
    assert 0.25 <= figures["sentiment_confidence"] <= 1.0
    assert f"mean confidence {figures['sentiment_confidence']:.0%}" in text


@pytest.mark.slow
def test_demo_on_the_real_engine(real_engine) -> None:  # type: ignore[no-untyped-def]
    text, figures = _run(20, real_engine)
    assert "Sentiment (" in text and "Nearest reviews" in text
    assert not [line for line in text.splitlines() if cell_len(line) > 80]
    assert figures["embeddings"]["prompt_tokens"] > 0
    # Every row gets one of the four labels, scored; most agree with the sample's own labels
    # (bench/task_quality.py measures the accuracy).
    assert all(label in SENTIMENT_LABELS for label in figures["sentiment_labels"])
    assert set(_shown_sentiment_labels(text)) <= set(SENTIMENT_LABELS)
    assert figures["sentiment_agree"] >= 0.4 * 20  # 10 of 20 when measured; chance is 5
