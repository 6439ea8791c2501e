"""Prompt tokens counted as vLLM will count them, without starting vLLM.

:class:`PromptTokens` loads the model directory's own tokenizer (the files vLLM loads) and
renders chat requests with its chat template, as vLLM's renderer does (``add_generation_prompt``,
the template's keyword arguments, then the text tokenized without adding special tokens again);
completion prompts and embedding inputs are tokenized as vLLM tokenizes them (special tokens
added). The counts are what the engine reports as ``prompt_tokens`` for the same request (a test
holds them equal on the bundled models).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ai_query.engine.vllm.setup import wait_for_background_import
from ai_query.tasks import Task

if TYPE_CHECKING:
    from ai_query.engine.backends.backend import GenerationRequest

#: Texts tokenized per call to the tokenizer.
_CHUNK = 4096


class PromptTokens:
    """The prompt-token counter of one model directory (its tokenizer loaded on first use)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (Hugging Face ``AutoTokenizer``, from the model directory)."""
        with self._lock:
            if self._tokenizer is None:
                wait_for_background_import()  # never two threads importing transformers
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
            return self._tokenizer

    def count(self, texts: Sequence[str], request: GenerationRequest | None) -> list[int]:
        """Prompt tokens of each text: a chat request rendered with the chat template, a
        completion prompt or an embedding input tokenized as it is."""
        tokenizer = self.tokenizer
        if request is None or request.task != Task.CHAT:
            return self._lengths(list(texts), special=True)
        kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
        if request.tools and request.tool_choice != "none":
            kwargs["tools"] = request.tools
        if request.params.reasoning_effort is not None:
            kwargs["reasoning_effort"] = request.params.reasoning_effort
        rendered = [
            tokenizer.apply_chat_template(request.conversation(text), **kwargs) for text in texts
        ]
        return self._lengths(rendered, special=False)

    def _lengths(self, texts: list[str], *, special: bool) -> list[int]:
        out: list[int] = []
        for start in range(0, len(texts), _CHUNK):
            encoded = self.tokenizer(
                texts[start : start + _CHUNK], add_special_tokens=special, verbose=False
            )["input_ids"]
            out.extend(len(ids) for ids in encoded)
        return out
