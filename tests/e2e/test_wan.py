"""End to end over the lab's WAN links (deploy/lab/README.md, "The WAN"):
the default WAN (Berlin-Denver 75 ms each way, Berlin-Paris 5 ms), links cut
and healed with ``scoped lab link`` while the lab runs.

Every test leaves the links healed. No test asserts how long anything took
(bench_edge.py measures that); which timeout ended a call is read from the
gateway's message. The one timing check is a lower bound: a call across a
link takes at least its round trip (the links are really in the path).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from scoped_cli.wan import LabFiles, load_state

from .conftest import Lab

pytestmark = pytest.mark.e2e


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
        code, _, err, _ = timed(
            lab, "server", "list", "-f", "json", "--os-scope", "<nova: Berlin&Denver>"
        )
        assert code != 0
        assert "Denver: timeout" in err, err[-3000:]
        # The connect timeout's wait, not the total timeout's (60 s): the
        # message says which one ended it.
        assert "for 60 s" not in err, err[-3000:]
        code, out, err, _ = timed(
            lab, "server", "list", "-f", "json", "--os-scope", "<nova: Denver|Berlin>"
        )
        assert code == 0, err[-3000:]
        assert "vm-berlin" in names(out)
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
        code, out, err, _ = timed(lab, "server", "list", "-f", "json")
        assert code == 0, err[-3000:]
        assert "vm-berlin" in names(out)
        code, out, err, _ = timed(lab, "image", "list", "-f", "json")
        assert code == 0, err[-3000:]
        assert {"tiny", "cirros-berlin"} <= names(out)


def gateway_rss(lab: Lab, site: str) -> int:
    pid = (lab.dir / "run" / f"{site.lower()}-gateway.pid").read_text().split()[0]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_cut_during_a_100_mib_download_ends_it_with_an_error(lab: Lab, tmp_path: Path) -> None:
    """Denver's image read at Berlin over a capped link; the link is cut
    half-way: the client's transfer ends with an error (it does not hang until
    the total timeout), and Berlin's gateway does not hold the image."""
    size = 100 * 1024 * 1024
    src = tmp_path / "big.img"
    with src.open("wb") as f:
        f.truncate(size)
    made = lab.openstack(
        "image", "create", f"cut-{os.getpid()}", "--file", str(src), "--disk-format", "raw",
        "--container-format", "bare", "-f", "json", cloud="Denver", timeout=900,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    image_id = json.loads(made.stdout)["id"]
    token = lab.openstack("token", "issue", "-f", "value", "-c", "id").stdout.strip()
    gateway = lab.gateway("Berlin")
    assert gateway is not None and token
    link(lab, "set", "Berlin", "Denver", "--bandwidth", "100")
    got, error = 0, None
    before = gateway_rss(lab, "Berlin")
    try:
        headers = {"X-Auth-Token": token, "X-Scope": "<glance: Denver>"}
        url = f"{gateway}/image/v2/images/{image_id}/file"
        # httpx's read timeout (50 s) is below the gateway's total (60 s):
        # a ReadTimeout here would mean the gateway let the client hang.
        with httpx.stream("GET", url, headers=headers, timeout=50) as resp:
            assert resp.status_code == 200
            chunks = resp.iter_raw()
            for chunk in chunks:
                got += len(chunk)
                if got >= 10 * 1024 * 1024:
                    break
            with cut(lab, "Denver"):
                try:
                    for chunk in chunks:
                        got += len(chunk)
                except httpx.HTTPError as err:
                    error = err
        grown = gateway_rss(lab, "Berlin") - before
    finally:
        link(lab, "heal", "Berlin", "Denver")
        link(lab, "set", "Berlin", "Denver", "--bandwidth", "none")
        lab.openstack("image", "delete", image_id, cloud="Denver")
    assert error is not None, f"the transfer ended without an error after {got} bytes"
    assert not isinstance(error, httpx.TimeoutException), f"the client hung: {error!r}"
    assert 10 * 1024 * 1024 <= got < size
    assert grown < 64 * 1024 * 1024, f"the gateway grew by {grown / 2**20:.0f} MiB"
