"""An endpoint's price: what its tokens cost, for EXPLAIN's estimates and for cost budgets.

ai_query's own catalog field (Databricks' endpoints carry none)::

    {"name": "ext-chat", "price": {"input_per_million": 0.15, "output_per_million": 0.6}, ...}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Price(BaseModel):
    """Price per 1M input (prompt) and output (completion) tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: float = Field(0.0, ge=0)
    """Price of 1M prompt tokens."""
    output_per_million: float = Field(0.0, ge=0)
    """Price of 1M generated tokens."""
    currency: str = Field("USD", min_length=1, max_length=8)
    """Currency of both prices."""

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        """What ``prompt_tokens`` read and ``completion_tokens`` generated cost."""
        return (
            prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        ) / 1e6
