"""What a job run tells its observer (a progress bar, a test) as it goes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ai_query.jobs.incremental import Plan


class RunObserver(Protocol):
    """Told how a run goes (a progress bar, a test)."""

    def planned(self, plan: Plan) -> None:
        """The rows were chosen; ``plan.todo`` rows will run."""

    def answered(
        self, rows: int, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0
    ) -> None:
        """ai_query answered ``rows`` more rows (called from engine threads)."""

    def committed(self, rows: int) -> None:
        """A batch of ``rows`` driving rows was committed."""
