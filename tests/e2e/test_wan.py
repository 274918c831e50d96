"""End to end over the lab's WAN links (deploy/lab/README.md, "The WAN"):
the default WAN (Berlin-Denver 75 ms each way, Berlin-Paris 5 ms), links cut
and healed with ``scoped lab link`` while the lab runs.

Every test leaves the links healed. Timing checks are lower bounds, or
generous upper bounds that tell connect timeouts (2 s in the lab's
scoped.yaml; a kept connection gone silent costs two: its answer does not
begin, then no new connection comes) from the gateway's total timeout (60 s).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from scoped_cli.wan import LabFiles, load_state

from .conftest import Lab

pytestmark = pytest.mark.e2e

CONNECT_TIMEOUT = 2.0  # deploy/lab/lab: timeouts.connect in every scoped.yaml
WELL_BELOW_TOTAL = 30.0  # the gateway's total timeout is 60 s


def names(out: str) -> set[str]:
    return {str(row["Name"]) for row in json.loads(out)}


def link(lab: Lab, *args: str) -> None:
    out = lab.scoped("link", *args, timeout=60)
    assert out.returncode == 0, out.stderr


@contextmanager
def cut(lab: Lab, *others: str, home: str = "Berlin") -> Iterator[None]:
    """Black-hole the links from ``home`` to ``others``; healed afterwards, whatever happens.

    What the gateway meets is a real partition: new connections time out in
    connect, and the connections it keeps open across the link go silent.
    """
    try:
        for other in others:
            link(lab, "cut", home, other, "--mode", "blackhole")
        yield
    finally:
        for other in others:
            lab.scoped("link", "heal", home, other, timeout=60)


def timed(lab: Lab, *args: str) -> tuple[int, str, str, float]:
    start = time.monotonic()
    out = lab.openstack(*args)
    return out.returncode, out.stdout, out.stderr, time.monotonic() - start


@pytest.fixture(scope="module", autouse=True)
def healed(lab: Lab) -> None:
    """Every link up to begin with (a run stopped half-way may have left one cut)."""
    for a, b in (("Berlin", "Denver"), ("Berlin", "Paris"), ("Denver", "Paris")):
        link(lab, "heal", a, b)


def round_trip_ms(lab: Lab, a: str, b: str) -> float:
    """The link's round trip as configured, without jitter (the default WAN:
    150 ms Berlin-Denver, 10 ms Berlin-Paris)."""
    return sum(load_state(LabFiles(lab.dir))[frozenset((a, b))].delay)


def test_cross_site_calls_cross_the_wan(lab: Lab) -> None:
    out = lab.openstack("--debug", "server", "list", "--os-scope", "<nova: Berlin&Denver&Paris>")
    assert out.returncode == 0, out.stderr[-3000:]
    found = re.findall(
        r"x-scope-sites: Berlin=200;t=([\d.]+), Denver=200;t=([\d.]+), Paris=200;t=([\d.]+)",
        out.stderr,
        re.I,
    )
    assert found, out.stderr[-3000:]
    # Each call to another site takes at least a round trip of its link (the
    # jitter takes up to 10% off each way).
    denver, paris = round_trip_ms(lab, "Berlin", "Denver"), round_trip_ms(lab, "Berlin", "Paris")
    assert denver > 0
    assert all(float(t) >= 0.9 * denver for _, t, _ in found)
    assert all(float(t) >= 0.9 * paris for _, _, t in found)


def test_a_black_holed_denver(lab: Lab) -> None:
    with cut(lab, "Denver"):
        code, _, err, took = timed(
            lab, "server", "list", "-f", "json", "--os-scope", "<nova: Berlin&Denver>"
        )
        assert code != 0
        assert "Denver: timeout" in err, err[-3000:]
        assert CONNECT_TIMEOUT <= took < WELL_BELOW_TOTAL
        code, out, err, took = timed(
            lab, "server", "list", "-f", "json", "--os-scope", "<nova: Denver|Berlin>"
        )
        assert code == 0, err[-3000:]
        assert "vm-berlin" in names(out)
        assert took < WELL_BELOW_TOTAL
        code, out, err, _ = timed(
            lab, "server", "list", "-f", "json", "--os-scope", "<nova: Berlin&Denver?>"
        )
        assert code == 0, err[-3000:]
        assert "vm-berlin" in names(out)
        assert "vm-denver" not in names(out)
    # Healed: Denver serves again once the gateway's circuit closes (its
    # probe runs every 2 s).
    deadline = time.monotonic() + 90
    while True:
        code, out, err, _ = timed(
            lab, "server", "list", "-f", "json", "--os-scope", "<nova: Denver|Berlin>"
        )
        if code == 0 and "vm-denver" in names(out):
            break
        assert time.monotonic() < deadline, err[-3000:]
        time.sleep(2)


def test_berlin_alone_keeps_working_with_both_other_sites_cut(lab: Lab) -> None:
    with cut(lab, "Denver", "Paris"):
        code, out, err, took = timed(lab, "server", "list", "-f", "json")
        assert code == 0, err[-3000:]
        assert "vm-berlin" in names(out)
        assert took < WELL_BELOW_TOTAL
        code, out, err, took = timed(lab, "image", "list", "-f", "json")
        assert code == 0, err[-3000:]
        assert {"tiny", "cirros-berlin"} <= names(out)
        assert took < WELL_BELOW_TOTAL
