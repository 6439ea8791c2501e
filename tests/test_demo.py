from __future__ import annotations

import io

import pytest
from rich.console import Console

from ai_query.demo import run_demo, sample_reviews


def test_sample_table_is_deterministic() -> None:
    assert sample_reviews(100) == sample_reviews(100)
    assert len({r["review"] for r in sample_reviews(100)}) > 50


def test_demo_on_the_deterministic_engine(fake_engine) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    figures = run_demo(Console(file=out, width=120), rows=30, engine=fake_engine)
    text = out.getvalue()
    assert "One-line summary" in text and "Nearest reviews" in text and "Timing and tokens" in text
    assert figures["summaries"]["completion_tokens"] > 0


@pytest.mark.slow
def test_demo_on_the_real_engine(real_engine) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    figures = run_demo(Console(file=out, width=120), rows=20)
    text = out.getvalue()
    assert "Structured sentiment" in text and "Nearest reviews" in text
    assert figures["embeddings"]["prompt_tokens"] > 0
    assert figures["sentiment_agreement"] > 0  # the tiny model gets at least some labels right
