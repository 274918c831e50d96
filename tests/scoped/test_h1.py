"""The connection's silence timers (scoped.h1.Deadlines): one loop timer per
millisecond for every exchange whose deadline falls in it; a cancelled one
never fires, none fires early."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from scoped.h1 import Deadlines, deadlines_of


class Exchange:
    """Stands for a Connection: what Deadlines calls back."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fired: list[tuple[str, float]]) -> None:
        self.loop, self.fired, self.key = loop, fired, None
        self.name = ""

    def _timer_fired(self, key: int) -> None:
        if key == self.key:
            self.fired.append((self.name, self.loop.time()))


def test_deadlines_fire_once_each_never_early_and_not_when_cancelled() -> None:
    async def main() -> tuple[list[tuple[str, float]], dict[str, float], int, int]:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines()
        fired: list[tuple[str, float]] = []
        now = loop.time()
        when: dict[str, float] = {}
        exchanges: dict[str, Any] = {}
        for name in ["a", "b", "c", "gone"]:
            ex = exchanges[name] = Exchange(loop, fired)
            ex.name = name
            when[name] = now + (0.06 if name == "c" else 0.02)
            ex.key = deadlines.add(when[name], ex)  # type: ignore[arg-type]
        a, b = exchanges["a"].key, exchanges["b"].key
        loop_timers = len(deadlines._buckets)
        deadlines.discard(exchanges["gone"].key, exchanges["gone"])  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        return fired, when, loop_timers, int(a == b)

    fired, when, buckets, same = asyncio.run(main())
    assert sorted(name for name, _ in fired) == ["a", "b", "c"]
    assert all(at >= when[name] - 0.001 for name, at in fired)  # libuv counts whole ms
    assert same == 1 and buckets == 2, "a, b and gone (the same ms) share one loop timer"


def test_each_loop_has_its_own_and_lets_it_go() -> None:
    async def mine() -> tuple[Deadlines, weakref.ref[asyncio.AbstractEventLoop]]:
        loop = asyncio.get_running_loop()
        return deadlines_of(loop), weakref.ref(loop)

    first, loop = asyncio.run(mine())
    second, _ = asyncio.run(mine())
    assert first is not second
    gc.collect()
    assert loop() is None, "a finished loop is not kept alive by its deadlines"
