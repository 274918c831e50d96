"""Per-site circuit breakers (docs/design.md §6).

A site that keeps failing is known down: a ``|`` skips it at once (reported
``skipped``) instead of waiting a connect timeout on every request. After a
cool-down one trial request may go through (half-open); a success, or a
health probe that gets an HTTP answer other than 502/503/504, closes the
circuit again.

Only failures that say "the site is not there" count: no HTTP answer at all
(refused, timeout, reset, error) or a 502/503/504 from a gateway in between.
A 500 is the site answering; it says nothing about the link.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

COUNTED_STATUSES = frozenset({502, 503, 504})


class State(Enum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True)
class CircuitSettings:
    failures: int = 3
    """Consecutive failures that open a site's circuit."""
    cooldown: float = 5.0
    """Seconds an open circuit waits before letting one trial request through."""
    probe_interval: float = 2.0
    """Seconds between health probes of sites whose circuit is open."""


class Breaker:
    """The circuit of one site."""

    __slots__ = ("_clock", "failures", "opened_at", "settings", "state", "trial_running")

    def __init__(self, settings: CircuitSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self._clock = clock
        self.state = State.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.trial_running = False

    def allow(self) -> bool:
        """Whether a request may go to this site now."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and self._clock() - self.opened_at >= self.settings.cooldown:
            self.state = State.HALF_OPEN
            self.trial_running = False
        if self.state is State.HALF_OPEN and not self.trial_running:
            self.trial_running = True
            return True
        return False

    def success(self) -> None:
        self.state = State.CLOSED
        self.failures = 0
        self.trial_running = False

    def failure(self) -> None:
        self.failures += 1
        if self.state is State.HALF_OPEN or self.failures >= self.settings.failures:
            self.state = State.OPEN
            self.opened_at = self._clock()
            self.trial_running = False


class Circuits:
    """The breakers of every site, and the observer that mirrors their state."""

    def __init__(
        self,
        sites: Iterable[str],
        settings: CircuitSettings,
        on_change: Callable[[str, State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._breakers = {s: Breaker(settings, clock) for s in sites}
        self._on_change = on_change
        self._clock = clock
        self.changes: dict[str, tuple[int, float]] = {}
        """Per site, the last change of its circuit here: (state, wall
        time). What sibling workers adopt (scoped/workers.py)."""
        self.version = 0
        """Counts the changes: whether ``changes`` is worth writing again."""

    def allow(self, site: str) -> bool:
        # allow/record of a closed circuit return at once, watching nothing:
        # every site call asks both (with the shared headers of
        # forward.upstream_headers, 71 -> 65 µs of CPU per site call,
        # tests/bench/bench_scale.py --quick, 1000 sites).
        breaker = self._breakers.get(site)
        if breaker is None or breaker.state is State.CLOSED:
            return True  # the usual case, with nothing to watch
        return self._watch(site, breaker, breaker.allow)

    def record(self, site: str, ok: bool) -> None:
        breaker = self._breakers.get(site)
        if breaker is None:
            return
        if ok and breaker.state is State.CLOSED and not breaker.failures:
            return  # a success of a healthy site changes nothing
        self._watch(site, breaker, breaker.success if ok else breaker.failure)

    def state(self, site: str) -> State:
        breaker = self._breakers.get(site)
        return State.CLOSED if breaker is None else breaker.state

    def reset(self) -> None:
        """Close every circuit (an operator's reset; tests)."""
        for site, breaker in self._breakers.items():
            was = breaker.state
            breaker.success()  # also forgets the failures counted while closed
            if was is not State.CLOSED:
                self.changes[site] = (State.CLOSED.value, time.time())
                self.version += 1
                if self._on_change is not None:
                    self._on_change(site, State.CLOSED)

    def adopt(self, changes: dict[str, tuple[int, float]], now: float) -> None:
        """Take a sibling worker's later changes (``now``: wall time): a
        circuit it opened opens here with the cooldown it has left, one it
        closed closes. A trial it runs (half-open) is its own."""
        for site, (value, at) in changes.items():
            breaker = self._breakers.get(site)
            mine = self.changes.get(site)
            if breaker is None or (mine is not None and mine[1] >= at):
                continue
            state = State(value)
            if state is State.OPEN and breaker.state is not State.OPEN:
                breaker.state = State.OPEN
                breaker.failures = self.settings.failures
                breaker.opened_at = self._clock() - max(0.0, now - at)
                breaker.trial_running = False
            elif state is State.CLOSED and breaker.state is not State.CLOSED:
                breaker.success()
            else:
                self.changes[site] = (value, at)
                continue
            self.changes[site] = (value, at)
            self.version += 1
            if self._on_change is not None:
                self._on_change(site, breaker.state)

    def open_sites(self) -> list[str]:
        return [s for s, b in self._breakers.items() if b.state is not State.CLOSED]

    def _watch(self, site: str, breaker: Breaker, action: Callable[[], object]) -> bool:
        before = breaker.state
        result = action()
        if breaker.state is not before:
            self.changes[site] = (breaker.state.value, time.time())
            self.version += 1
            if self._on_change is not None:
                self._on_change(site, breaker.state)
        return bool(result)


def status_counts(status: int) -> bool:
    """Whether an HTTP answer says the site is unreachable (a gateway in
    between said so); a failure says it by its class (``Failure.counts``)."""
    return status in COUNTED_STATUSES
