"""Parse cost per scope: cold (first sight of a text) and cached (seen before).

The gateway parses the scope of every request, so the cached figure is what a
steady stream of requests pays. Prints microseconds per parse (median of
several rounds). Targets (issue 2): cold < 200 us, cached < 5 us.

    .venv/bin/python tests/bench/bench_parse.py
"""

from __future__ import annotations

import statistics
import time

from scoped_grammar import parse
from scoped_grammar.parser import _parse_cached

from scoped.plan import _plan_cached, plan_scope

TYPICAL = "<nova: Berlin&Denver, glance: Denver|Paris, neutron: Berlin&Paris?>"
ROUNDS = 7
COLD_N = 2000
CACHED_N = 200_000


def cold_us(text: str) -> float:
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(COLD_N):
            _parse_cached.cache_clear()
            parse(text)
        rounds.append((time.perf_counter() - start) / COLD_N * 1e6)
    return statistics.median(rounds)


def cached_us(text: str) -> float:
    parse(text)
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(CACHED_N):
            parse(text)
        rounds.append((time.perf_counter() - start) / CACHED_N * 1e6)
    return statistics.median(rounds)


def plan_cached_us(text: str) -> float:
    scope = parse(text)
    sites = ("Berlin", "Denver", "Paris")
    plan_scope(scope, sites, "Berlin")
    start = time.perf_counter()
    for _ in range(CACHED_N):
        plan_scope(scope, sites, "Berlin")
    return (time.perf_counter() - start) / CACHED_N * 1e6


def main() -> None:
    print(f"scope: {TYPICAL}")
    print(f"cold parse:        {cold_us(TYPICAL):8.1f} us   (target < 200)")
    print(f"cached parse:      {cached_us(TYPICAL):8.3f} us   (target < 5)")
    _plan_cached.cache_clear()
    print(f"cached plan:       {plan_cached_us(TYPICAL):8.3f} us")
    json_form = '{"compute": "Berlin&Denver", "image": "Denver|Paris", "network": "Berlin&Paris?"}'
    print(f"cold parse (JSON): {cold_us(json_form):8.1f} us")


if __name__ == "__main__":
    main()
