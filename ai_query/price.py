"""An endpoint's price and budget: what its tokens cost (EXPLAIN's estimates, cost budgets), and
the most its callers may spend on the server.

ai_query's own catalog fields (Databricks' endpoints carry neither)::

    {"name": "ext-chat", "price": {"input_per_million": 0.15, "output_per_million": 0.6},
     "budget": {"max_cost": 5.0, "key": "user", "renewal_period": "day"}, ...}
"""

from __future__ import annotations

from typing import Literal

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


class EndpointBudget(BaseModel):
    """The most an endpoint's callers may spend through a server (``ai-query serve``), per
    period: per principal (``key: user``, like a rate limit) or for everybody together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(default=None, ge=0)
    """Prompt plus generated tokens per period."""
    max_cost: float | None = Field(default=None, ge=0)
    """Cost per period at the endpoint's ``price``."""
    key: Literal["user", "endpoint"] = "user"
    """Whether each principal has its own budget or everybody shares one."""
    renewal_period: Literal["minute", "hour", "day"] = "day"
    """How long a budget lasts before it starts again (from its first call)."""
