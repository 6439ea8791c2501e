"""Restart policy of supervised engines (a fake clock; no processes)."""

from __future__ import annotations

import pytest

from ai_query.engine.process.supervision import (
    EngineHealth,
    EngineState,
    RestartPolicy,
    Supervisor,
    worst_health,
)
from ai_query.errors import EngineDeadError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_start_waits_for_nothing_and_is_not_a_restart() -> None:
    sup = Supervisor("m", clock=Clock())
    assert sup.needs_start and sup.state is EngineState.NOT_STARTED
    assert sup.starting() == 0.0
    assert sup.state is EngineState.STARTING and not sup.state.ready
    sup.started()
    assert sup.health() == EngineHealth(EngineState.READY, 0, None)


def test_restarts_back_off_then_fail_with_the_last_cause() -> None:
    clock = Clock()
    sup = Supervisor("smollm2", RestartPolicy(max_restarts=3, window_s=300, backoff_s=1),
                     clock=clock)
    sup.starting()
    sup.started()
    delays = []
    for i in range(3):
        sup.died(RuntimeError(f"killed {i}"))
        assert sup.state is EngineState.DEAD and sup.needs_start
        delays.append(sup.starting())
        assert sup.state is EngineState.RESTARTING
        sup.started()
        clock.now += 10
    assert delays == [1.0, 2.0, 4.0]
    sup.died(RuntimeError("killed 3"))
    assert sup.state is EngineState.FAILED, "the death past the limit fails it at once"
    with pytest.raises(EngineDeadError, match=r"smollm2 is FAILED: it died 4 times within 300 s "
                       r"\(last cause: RuntimeError: killed 3\)"):
        sup.starting()
    assert sup.state is EngineState.FAILED
    with pytest.raises(EngineDeadError):  # stays failed
        sup.starting()
    assert sup.health().restarts == 3


def test_the_outlook_says_what_happens_next_and_what_brings_a_failed_engine_back() -> None:
    sup = Supervisor("the vLLM engine for smollm2",
                     RestartPolicy(max_restarts=2, window_s=300, backoff_s=1),
                     revival="restart the engine server (ai-query serve, pid 7)", clock=Clock())
    assert sup.outlook() == "the next request starts it"
    sup.starting()
    sup.started()
    sup.died("killed")
    assert sup.outlook() == "the next request restarts it (after a wait of 1 s)"
    sup.starting()
    assert sup.outlook() == "it is being restarted"
    sup.started()
    sup.died("killed")
    assert sup.outlook() == "the next request restarts it (after a wait of 2 s)"
    sup.starting()
    sup.started()
    sup.died("killed again")
    outlook = sup.outlook()
    assert outlook == (
        "it is FAILED: it died 3 times within 300 s and is not restarted again; restart the "
        "engine server (ai-query serve, pid 7) to bring it back"
    )
    assert "next request" not in outlook
    assert str(sup.failure()) == (
        "the vLLM engine for smollm2 is FAILED: it died 3 times within 300 s (last cause: killed "
        "again) and is not restarted again; restart the engine server (ai-query serve, pid 7) "
        "to bring it back"
    )
    sup.stopped()  # an orderly stop does not revive it
    assert sup.state is EngineState.FAILED


def test_restarts_outside_the_window_are_forgotten() -> None:
    clock = Clock()
    sup = Supervisor("m", RestartPolicy(max_restarts=1, window_s=60, backoff_s=0.5), clock=clock)
    sup.starting()
    sup.started()
    sup.died("boom")
    assert sup.starting() == 0.5
    sup.started()
    clock.now += 61
    sup.died("boom again")
    assert sup.starting() == 0.5  # the first restart left the window
    assert sup.health().restarts == 2


def test_an_orderly_stop_is_not_a_death() -> None:
    sup = Supervisor("m", clock=Clock())
    sup.starting()
    sup.started()
    sup.stopped()
    assert sup.state is EngineState.NOT_STARTED and sup.starting() == 0.0


def test_worst_health_of_an_endpoint_is_its_least_ready_entity() -> None:
    ready = EngineHealth(EngineState.READY, 1, None)
    dead = EngineHealth(EngineState.DEAD, 2, "EngineDeadError: gone")
    assert worst_health([ready, dead]) == EngineHealth(EngineState.DEAD, 3, "EngineDeadError: gone")
    assert worst_health([]).state is EngineState.NOT_STARTED
    assert worst_health([ready, EngineHealth(EngineState.NOT_STARTED)]).state.ready
