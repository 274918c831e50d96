"""What the workers of one gateway share (scoped/workers.py): one /metrics
for all of them, and circuits that agree. Two gateways in this process play
two workers (a live PID each: this process's and its parent's); a worker
that exited is a PID that no longer exists."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from scoped.circuit import Circuits, CircuitSettings, State
from scoped.config import parse_config
from scoped.gateway import Gateway
from scoped.http import Body, Request
from scoped.memory import Exchange, MemoryReply, MemoryUpstream, json_reply
from scoped.workers import WorkerShare, merge

LIVE = os.getppid()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def family(name: str, typ: str, *samples: tuple[str, dict[str, str], float]) -> Metric:
    fam = Metric(name, "doc", typ)
    for sample in samples:
        fam.add_sample(*sample)
    return fam


def values(fams: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams for s in f.samples}


def test_counters_and_histograms_add_up_and_gauges_take_the_live_highest() -> None:
    def worker(n: float, state: float) -> list[Metric]:
        return [
            family("req", "counter", ("req_total", {"s": "a"}, n), ("req_created", {}, 100 + n)),
            family(
                "lat",
                "histogram",
                ("lat_bucket", {"le": "0.1"}, n),
                ("lat_bucket", {"le": "+Inf"}, 2 * n),
                ("lat_count", {}, 2 * n),
                ("lat_sum", {}, 0.5 * n),
            ),
            family("circuit", "gauge", ("circuit", {"site": "D"}, state)),
        ]

    merged = merge([(True, worker(1, 0)), (True, worker(2, 1)), (False, worker(4, 2))])
    got = values(merged)
    assert got[("req_total", (("s", "a"),))] == 7  # a dead worker's counts stay
    assert got[("req_created", ())] == 101
    assert got[("lat_bucket", (("le", "0.1"),))] == 7
    assert got[("lat_bucket", (("le", "+Inf"),))] == 14
    assert got[("lat_sum", ())] == 3.5
    assert got[("circuit", (("site", "D"),))] == 1  # not the dead worker's 2
    [lat] = [f for f in merged if f.name == "lat"]
    assert [s.labels.get("le") for s in lat.samples][:2] == ["0.1", "+Inf"]


def test_a_snapshot_is_read_by_the_siblings_and_a_dead_ones_gauges_are_not(
    tmp_path: Path,
) -> None:
    gone = dead_pid()
    for pid, n in ((LIVE, 2.0), (gone, 5.0)):
        WorkerShare(tmp_path, pid).write_metrics(
            [
                family("req", "counter", ("req_total", {}, n)),
                family("circuit", "gauge", ("circuit", {"site": "D"}, n)),
            ]
        )
    me = WorkerShare(tmp_path)
    own = [family("req", "counter", ("req_total", {}, 1.0))]
    got = values(me.merged_metrics(own))
    assert got[("req_total", ())] == 8
    assert got[("circuit", (("site", "D"),))] == 2
    assert not list(tmp_path.glob(".*tmp"))  # written whole, then renamed


def test_a_circuit_one_worker_opened_opens_at_its_sibling_with_the_cooldown_left() -> None:
    settings = CircuitSettings(failures=2, cooldown=10.0)
    now = [1000.0]
    a = Circuits(["D"], settings, clock=lambda: now[0])
    seen: list[tuple[str, State]] = []
    b = Circuits(["D"], settings, lambda site, state: seen.append((site, state)), lambda: now[0])
    a.record("D", False)
    a.record("D", False)
    assert a.state("D") is State.OPEN
    state, at = a.changes["D"]
    b.adopt({"D": (state, at)}, at + 4.0)  # read 4 s after A opened it
    assert b.state("D") is State.OPEN and seen == [("D", State.OPEN)]
    assert not b.allow("D")
    now[0] += 6.0  # A's cooldown is over: B lets its trial through too
    assert b.allow("D")
    b.record("D", True)
    assert b.state("D") is State.CLOSED
    a.adopt(dict(b.changes), b.changes["D"][1] + 0.5)
    assert a.state("D") is State.CLOSED
    b.adopt({"D": (state, at)}, at + 5)  # older than B's own change: ignored
    assert b.state("D") is State.CLOSED


def test_an_unknown_site_and_a_sibling_trial_are_left_alone() -> None:
    c = Circuits(["D"], CircuitSettings())
    c.adopt({"X": (State.OPEN.value, 1.0), "D": (State.HALF_OPEN.value, 2.0)}, 3.0)
    assert c.state("D") is State.CLOSED
    assert c.changes == {"D": (State.HALF_OPEN.value, 2.0)}


async def answer(ex: Exchange) -> MemoryReply:
    return json_reply(200, {"servers": []})


def gateway(share: WorkerShare) -> Gateway:
    data: dict[str, Any] = {
        "site": "Berlin",
        "sites": {"Berlin": {}, "Denver": {"endpoints": {"compute": "http://denver.test"}}},
        "backends": {"compute": "http://berlin.test"},
    }
    upstream = MemoryUpstream({"http://berlin.test": answer, "http://denver.test": answer})
    return Gateway(parse_config(data, "<test>"), upstream, share=share)


def test_metrics_answer_for_every_worker_whichever_is_scraped(tmp_path: Path) -> None:
    requests = (3, 4)

    async def main() -> list[bytes]:
        one = gateway(WorkerShare(tmp_path))
        two = gateway(WorkerShare(tmp_path, LIVE))
        for gw, n in zip((one, two), requests, strict=True):
            await gw.start()
            for _ in range(n):
                headers = (("x-auth-token", "t"), ("x-scope", "<compute: Berlin&Denver>"))
                req = Request("GET", "compute", "/v2.1/servers", "", headers, "http://gw", Body())
                assert (await gw.handle(req)).status == 200
        await asyncio.sleep(0.1)  # each wrote its first snapshot at start
        for gw in (one, two):
            await gw.close()  # and its last one now
        texts = [gw.own_response("/metrics", "GET").body for gw in (one, two)]
        assert all(isinstance(t, bytes) for t in texts)
        return texts  # type: ignore[return-value]

    for text in asyncio.run(main()):
        fams = {f.name: f for f in text_string_to_metric_families(text.decode())}
        served = [s for s in fams["scoped_requests"].samples if s.name.endswith("_total")]
        assert sum(s.value for s in served) == sum(requests)
        calls = [s for s in fams["scoped_upstream_requests"].samples if s.name.endswith("_total")]
        assert sum(s.value for s in calls) == 2 * sum(requests)


def test_a_circuit_closed_without_a_request_is_published_again(tmp_path: Path) -> None:
    """A probe closes a circuit with no request served: the siblings must
    still read that it closed."""

    async def main() -> tuple[int, int]:
        share = WorkerShare(tmp_path)
        gw = gateway(share)
        gw.circuits.record("Denver", False)
        gw.circuits.record("Denver", False)
        gw.circuits.record("Denver", False)
        await gw.start()
        await asyncio.sleep(0.2)
        opened = orjson.loads((tmp_path / f"circuits-{share.pid}.json").read_bytes())["Denver"][0]
        gw.circuits.reset()  # as a probe that got an answer
        await asyncio.sleep(1.3)
        closed = orjson.loads((tmp_path / f"circuits-{share.pid}.json").read_bytes())["Denver"][0]
        await gw.close()
        return opened, closed

    assert asyncio.run(main()) == (State.OPEN.value, State.CLOSED.value)
