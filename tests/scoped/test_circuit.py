"""Per-site circuit breakers (scoped.circuit): the usual case (a closed
circuit, a success) takes a short way that must change nothing else."""

from __future__ import annotations

from scoped.circuit import Circuits, CircuitSettings, State


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def circuits(changes: list[tuple[str, State]], clock: Clock) -> Circuits:
    settings = CircuitSettings(failures=3, cooldown=5.0)
    return Circuits(["A", "B"], settings, lambda s, st: changes.append((s, st)), clock)


def test_a_success_forgets_the_failures_counted_while_closed() -> None:
    changes: list[tuple[str, State]] = []
    c = circuits(changes, Clock())
    for _ in range(2):
        c.record("A", False)
    c.record("A", True)
    for _ in range(2):
        c.record("A", False)
    assert c.state("A") is State.CLOSED and c.allow("A")
    c.record("A", False)
    assert c.state("A") is State.OPEN and not c.allow("A")
    assert changes == [("A", State.OPEN)]
    assert c.state("B") is State.CLOSED and c.allow("B")


def test_the_trial_after_the_cooldown_is_one_call_and_a_success_closes() -> None:
    changes: list[tuple[str, State]] = []
    clock = Clock()
    c = circuits(changes, clock)
    for _ in range(3):
        c.record("A", False)
    clock.now = 5.0
    assert c.allow("A")  # the one trial
    assert not c.allow("A")
    assert c.state("A") is State.HALF_OPEN
    c.record("A", True)
    assert c.state("A") is State.CLOSED and c.allow("A") and c.allow("A")
    assert changes == [("A", State.OPEN), ("A", State.HALF_OPEN), ("A", State.CLOSED)]
    c.record("A", True)  # nothing changes: no change reported
    assert len(changes) == 3
    c.record("unknown", True)
    assert c.allow("unknown") and c.state("unknown") is State.CLOSED
