"""Endpoint budgets on the server (the catalog's ``budget``), shared by the Flight and HTTP sides.

Each endpoint with a :class:`~ai_query.price.EndpointBudget` gets, per principal (``key: user``)
or for everybody (``key: endpoint``), an :class:`~ai_query.engine.core.budget.Allowance` that
lasts one ``renewal_period`` from its first call, then starts again. Flight batches run through
a :class:`~ai_query.engine.core.budget.BudgetedEngine` on it, so a client that sets no budget
of its own still cannot pass the server's: rows that do not fit carry the budget error. HTTP
calls are refused once the allowance is spent, and count what they used after.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ai_query.catalog import Endpoint
from ai_query.engine.core.budget import Allowance, Budget, Spend
from ai_query.errors import BudgetExceededError

#: Seconds in each ``renewal_period``.
PERIOD_SECONDS: dict[str, float] = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


class EndpointBudgets:
    """The open allowances of the endpoints' budgets; thread-safe."""

    def __init__(
        self, *, period_scale: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Args: ``period_scale`` multiplies every period (tests); ``clock``: monotonic seconds."""
        self._scale = period_scale
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], tuple[float, Allowance]] = {}

    def allowance(self, endpoint: Endpoint, principal: str) -> Allowance | None:
        """What ``principal`` may still spend on ``endpoint`` now; None without a budget."""
        limit = endpoint.budget
        if limit is None or (limit.max_tokens is None and limit.max_cost is None):
            return None
        who = principal if limit.key == "user" else "*"
        period = PERIOD_SECONDS[limit.renewal_period] * self._scale
        with self._lock:
            now = self._clock()
            found = self._open.get((endpoint.name, who))
            if found is None or now - found[0] >= period:
                scope = (f"endpoint {endpoint.name!r}'s budget for "
                         f"{'user ' + repr(principal) if who != '*' else 'all its callers'} "
                         f"per {limit.renewal_period}")
                budget = Budget(max_tokens=limit.max_tokens, max_cost=limit.max_cost)
                found = (now, Allowance(budget, scope))
                self._open[(endpoint.name, who)] = found
            return found[1]

    def check(self, endpoint: Endpoint, principal: str) -> Allowance | None:
        """The allowance of an HTTP call, or None without a budget.

        Raises:
            BudgetExceededError: when nothing is left of it.
        """
        allowance = self.allowance(endpoint, principal)
        if allowance is not None and allowance.spent_out():
            raise BudgetExceededError(allowance.exhausted("the request was not sent"))
        return allowance

    @staticmethod
    def count(
        allowance: Allowance | None, endpoint: Endpoint, prompt: int, completion: int
    ) -> None:
        """Add what an HTTP call used to its allowance."""
        if allowance is not None:
            price = endpoint.price
            cost = price.cost(prompt, completion) if price is not None else 0.0
            allowance.count(Spend(prompt, completion, cost))


class QueryBudgets:
    """The allowances of queries that carry their own budget (a budget tag on their batches:
    Spark queries, whose rows come from many worker processes), by caller and query id; the
    oldest are forgotten past :attr:`KEEP`. Thread-safe."""

    KEEP = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple[str, str], Allowance] = OrderedDict()

    def allowance(self, principal: str, query: str, budget: Budget) -> Allowance:
        """The allowance of ``principal``'s query ``query`` (made on its first batch)."""
        with self._lock:
            found = self._open.get((principal, query))
            if found is None:
                found = Allowance(budget, "the query")
                self._open[(principal, query)] = found
                while len(self._open) > self.KEEP:
                    self._open.popitem(last=False)
            self._open.move_to_end((principal, query))
            return found
