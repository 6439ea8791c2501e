"""Inference engines: Arrow request batches in, Arrow result batches out.

Backends: vLLM (:mod:`~ai_query.engine.vllm.backend`), OpenAI-compatible HTTP
(:mod:`~ai_query.engine.backends.external`) and a deterministic one for tests. Heavy modules load
lazily.
"""

from __future__ import annotations

from ai_query.engine.core.protocol import Engine
from ai_query.engine.spec import EngineSpec, build_engine, get_engine

__all__ = ["Engine", "EngineSpec", "build_engine", "get_engine"]
