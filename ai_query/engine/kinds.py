"""What answers an engine's requests: the one vocabulary of engine kinds.

Where the engine runs is a separate choice: in this process
(:func:`ai_query.engine.spec.in_process_engine`, what ``ai-query serve`` hosts), in a private
engine server started for this process (:class:`ai_query.engine.process.embedded.EmbeddedEngine`,
what a DuckDB connection or a local Spark session uses), or on engine servers elsewhere
(:attr:`EngineKind.FLIGHT`).
"""

from __future__ import annotations

from enum import StrEnum

from ai_query.errors import ConfigError


class EngineKind(StrEnum):
    """What answers requests (a :class:`~enum.StrEnum`: equal to its value)."""

    VLLM = "vllm"
    """The catalog's models, on vLLM (external models are called for real)."""
    DETERMINISTIC = "deterministic"
    """No model: a deterministic backend answers from the text (trying a pipeline, tests);
    external models are still called for real."""
    FLIGHT = "flight"
    """Engine servers elsewhere, over Arrow Flight (a client; never what a server hosts)."""
    RECORDING = "recording"
    """No model: EXPLAIN's recorder, writing the requests into the directory in the spec's
    ``urls`` and answering with stand-ins (:mod:`ai_query.engine.recording`)."""

    @classmethod
    def _missing_(cls, value: object) -> EngineKind | None:
        # ``local`` was the name of the vLLM engine before this vocabulary; still accepted.
        return cls.VLLM if value == "local" else None

    @classmethod
    def parse(cls, value: str, *, allowed: tuple[EngineKind, ...] | None = None) -> EngineKind:
        """``value`` as a kind (``local`` also means :attr:`VLLM`), one of ``allowed``.

        Raises:
            ConfigError: naming the kinds allowed.
        """
        choices = allowed or tuple(cls)
        unknown = ConfigError(
            f"unknown engine {str(value)!r}; expected one of {', '.join(choices)}"
        )
        try:
            kind = cls(value)
        except ValueError:
            raise unknown from None
        if kind not in choices:
            raise unknown
        return kind


#: What an engine server (``ai-query serve --engine``) can host.
SERVER_ENGINE_KINDS: tuple[EngineKind, ...] = (EngineKind.VLLM, EngineKind.DETERMINISTIC)
