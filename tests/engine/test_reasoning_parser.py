"""A local reasoning model's reasoning, split from its answer by vLLM's own reasoning parser
(``engine_args: {reasoning_parser: ...}``), on text that holds the reasoning markers; the
answer alone is what ``ai_query`` returns, and structured output constrains it alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ai_query.engine.backends.bundled import smollm2_dir
from ai_query.engine.vllm import compat
from ai_query.engine.vllm.backend import VLLMBackend
from ai_query.errors import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def thinking_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The bundled SmolLM2's tokenizer with the ``<think>`` markers a reasoning model has."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    return tokenizer


def test_vllms_parser_splits_the_reasoning_and_counts_its_tokens(thinking_tokenizer: Any) -> None:
    parser = compat.reasoning_parser(thinking_tokenizer, "deepseek_r1")
    text = "<think>The user wants a fruit. Apples are common.</think>An apple."
    ids = thinking_tokenizer.encode(text, add_special_tokens=False)
    reasoning, answer, tokens = compat.split_reasoning(parser, "m", text, ids)
    assert (reasoning, answer) == ("The user wants a fruit. Apples are common.", "An apple.")
    assert 0 < tokens < len(ids)
    # R1's template opens the reasoning in the prompt: the answer holds only the closing marker.
    text = "Apples are common.</think>An apple."
    ids = thinking_tokenizer.encode(text, add_special_tokens=False)
    assert compat.split_reasoning(parser, "m", text, ids)[:2] == ("Apples are common.", "An apple.")


def test_bad_parsers_are_clear_errors(thinking_tokenizer: Any) -> None:
    with pytest.raises(ConfigError, match=r"unknown reasoning_parser 'nope'; vLLM has: .*deepseek_r1"):
        compat.reasoning_parser(thinking_tokenizer, "nope")
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    with pytest.raises(ConfigError, match=r"reasoning_parser 'deepseek_r1': .*think start/end"):
        compat.reasoning_parser(plain, "deepseek_r1")


def test_the_answer_alone_is_constrained(tmp_path: Path) -> None:
    backend = VLLMBackend(smollm2_dir(), engine_args={"reasoning_parser": "deepseek_r1"})
    assert backend.reasoning_parser == "deepseek_r1"
    assert "reasoning_parser" not in backend.engine_args  # not an engine argument
    structured = backend.engine_args["structured_outputs_config"]
    assert structured["reasoning_parser"] == "deepseek_r1"
    assert structured["backend"] == "xgrammar"  # the defaults kept


def test_a_stream_is_split_delta_by_delta(thinking_tokenizer: Any) -> None:
    parser = compat.reasoning_parser(thinking_tokenizer, "deepseek_r1")
    text = "<think>The user wants a fruit.</think>An apple."
    ids = thinking_tokenizer.encode(text, add_special_tokens=False)
    so_far: tuple[str, list[int]] = ("", [])
    thoughts, answer = [], []
    for token in ids:
        piece = thinking_tokenizer.decode([token])
        reasoning, content = compat.stream_reasoning(parser, so_far, (piece, [token]))
        thoughts.append(reasoning)
        answer.append(content)
        so_far = (so_far[0] + piece, [*so_far[1], token])
    assert "".join(thoughts) == "The user wants a fruit."
    assert "".join(answer) == "An apple."
    assert compat.count_reasoning_tokens(parser, ids) > 0
