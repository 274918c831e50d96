"""End-to-end times in the lab: each command through scoped against the same
command sent straight to the site (no scope), with the real openstack CLI.
Also the lab's memory per site.

    .venv/bin/scoped lab up --dir lab      # first (or let this script do it)
    .venv/bin/python tests/bench/bench_lab.py [--dir lab] [--runs 3]

Each figure is the median wall time of the whole command (the CLI's own
start-up, ~1.5-2.5 s here, included in both columns).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

COMMANDS: list[tuple[str, list[str], list[str]]] = [
    # (label, through scoped, straight to the site)
    (
        "server list",
        ["server", "list", "--os-scope", "<nova: Berlin&Denver>"],
        ["server", "list"],
    ),
    (
        "image list",
        ["image", "list", "--os-scope", "<glance: Berlin&Denver&Paris>"],
        ["image", "list"],
    ),
    (
        "network list",
        ["network", "list", "--os-scope", "<neutron: Berlin|Denver>"],
        ["network", "list"],
    ),
    ("token issue", ["token", "issue", "--os-scope", "<*: Berlin>"], ["token", "issue"]),
]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(ROOT / "lab"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lab = Path(args.dir)
    start = time.perf_counter()
    up = subprocess.run([str(BIN / "scoped"), "lab", "up", "--dir", str(lab)], check=False)
    if up.returncode != 0:
        raise SystemExit("scoped lab up failed")
    print(f"scoped lab up: {time.perf_counter() - start:.0f} s (from the state it was in)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(lab / "clouds.yaml")
    osc = [str(BIN / "openstack"), "--os-cloud", "Berlin"]
    print(f"\n{'command':14} {'via scoped':>11} {'straight':>10}   (median of {args.runs})")
    for label, scoped, straight in COMMANDS:
        a = statistics.median(timed([*osc, *scoped], env) for _ in range(args.runs))
        b = statistics.median(timed([*osc, *straight], env) for _ in range(args.runs))
        print(f"{label:14} {a:10.2f}s {b:9.2f}s")
    boot = timed(
        [*osc, "server", "create", "bench-vm", "--flavor", "m1.tiny", "--image",
         "cirros-denver", "--network", "net1", "--wait",
         "--os-scope", "<nova: Berlin, glance: Denver>"],
        env,
    )  # fmt: skip
    timed([*osc, "server", "delete", "bench-vm", "--wait", "--os-scope", "<nova: Berlin>"], env)
    print(f"{'cross-site boot':14} {boot:10.2f}s  (Berlin's Nova, Denver's image, to ACTIVE)")
    status = subprocess.run(
        [str(BIN / "scoped"), "lab", "status", "--dir", str(lab)],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    per_site: dict[str, int] = {}
    site = None
    for line in status.splitlines():
        m = re.match(r"site (\w+)", line)
        if m:
            site = m.group(1)
        mb = re.search(r"\s(\d+) MB\s", line)
        if site and mb and line.startswith("  "):
            per_site[site] = per_site.get(site, 0) + int(mb.group(1))
    print("\nRSS per site: " + ", ".join(f"{s} {mb} MB" for s, mb in per_site.items()))


if __name__ == "__main__":
    main()
