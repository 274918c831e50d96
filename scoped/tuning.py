"""Process tuning for a long-running gateway.

Python's cyclic garbage collector, at its default thresholds, ran often
enough on the forwarding path to cost ~35 us per request here (a third of
what the core costs): every request allocates a few hundred short-lived
objects, and each collection also walks the large, long-lived heap of
imported modules (keystoneauth1, lark, prometheus-client, uvicorn).
Measured with tests/bench/bench_gateway.py: CPU per request 195 us -> 155 us.

A fan-out keeps ~35 tracked objects per site alive until it is merged (its
task, coroutines, futures, the answer): a ``*`` over 1000 sites crossed a
young generation of 10,000 three times, each collection walking objects
all still in use, ~9 ms of a 70 ms request (a gc callback's count and time,
tests/bench/bench_scale.py --quick, 1000 sites). The young generation is
sized to the federation (:data:`GEN0_PER_SITE` objects a site): no
collection in such a request. What it costs: cyclic garbage may reach that
many objects before a collection (64,000 at 1000 sites: a few MB).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000
GEN0_PER_SITE = 64
"""Young-generation room per site of the federation (~35 live during a fan-out)."""


def gen0_threshold(sites: int = 0) -> int:
    """The young generation's size for a federation of ``sites`` sites."""
    return max(GEN0_THRESHOLD, GEN0_PER_SITE * sites)


def tune_gc(sites: int = 0) -> None:
    """Freeze what start-up allocated (never scanned again) and collect the
    young generation less often (:func:`gen0_threshold`: the wider the
    federation, the less often). Call once, after imports and config, before
    serving. Only for the gateway's own process: a service that loads the WSGI
    filter keeps its own settings."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold(sites), max(gen1, 50), max(gen2, 100))
