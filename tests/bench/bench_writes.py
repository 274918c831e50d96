"""*-DC writes on the lab, with the real ``openstack`` CLI: a boot at 1, 2
and 3 sites (one ``&`` create, to ACTIVE everywhere), and a 300 MiB image
uploaded to each site alone, then to all three at once through one ``&``
(streamed to every site concurrently). Prints wall times, the ratio of the
``&`` upload to the slowest single-site one (aim <= 1.3x) and the growth of
Berlin's gateway's RSS during it (aim < 64 MiB).

    .venv/bin/scoped lab up --dir lab            # first (the default WAN)
    .venv/bin/python tests/bench/bench_writes.py [--dir lab] [--runs 3] [--mib 300]

Every server and image made is deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

BOOTS = (
    ("Berlin", "<nova: Berlin, glance: Berlin>"),
    ("Denver", "<nova: Denver, glance: Berlin, network: Denver>"),
    ("2 sites", "<nova: Berlin&Denver, glance: Berlin>"),
    ("3 sites", "<nova: Berlin&Denver&Paris, glance: Berlin>"),
)


class Lab:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        self.env["OS_CLIENT_CONFIG_FILE"] = str(directory / "clouds.yaml")

    def openstack(self, *args: str, timeout: float = 900) -> tuple[float, str]:
        start = time.perf_counter()
        out = subprocess.run(
            [str(BIN / "openstack"), "--os-cloud", "Berlin", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        took = time.perf_counter() - start
        if out.returncode != 0:
            raise SystemExit(f"openstack {' '.join(args)}: {out.stderr.strip()[-500:]}")
        return took, out.stdout

    def gateway_pid(self) -> int:
        return int((self.dir / "run" / "berlin-gateway.pid").read_text().split()[0])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"no VmRSS for process {pid}")


class PeakRss:
    """Samples a process's RSS every 20 ms (bounded by ``limit`` seconds)."""

    def __init__(self, pid: int, limit: float = 1800) -> None:
        self.pid, self.limit = pid, limit
        self.base = rss_kib(pid)
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def boot(lab: Lab, scope: str, name: str) -> float:
    took, out = lab.openstack(
        "server", "create", name, "--flavor", "m1.tiny", "--image", "cirros-berlin",
        "--network", "net1", "--wait", "-f", "json", "--os-scope", scope,
    )  # fmt: skip
    server = json.loads(out)
    if server["status"] != "ACTIVE":
        raise SystemExit(f"{name}: {server['status']}")
    nova = scope.split(",", maxsplit=1)[0] + ">"  # the delete needs only nova's scope
    lab.openstack("server", "delete", server["id"], "--wait", "--os-scope", nova)
    return took


def upload(lab: Lab, scope: str, path: Path, name: str) -> float:
    took, out = lab.openstack(
        "image", "create", name, "--file", str(path), "--disk-format", "raw",
        "--container-format", "bare", "-f", "json", "--os-scope", scope,
    )  # fmt: skip
    lab.openstack("image", "delete", json.loads(out)["id"], "--os-scope", scope)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=ROOT / "lab")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=300)
    args = ap.parse_args()
    lab = Lab(args.dir.resolve())
    tag = os.getpid()

    print(f"boot to ACTIVE, median of {args.runs} (the CLI's start-up included)")
    slowest_one = 0.0
    for label, scope in BOOTS:
        times = [boot(lab, scope, f"bw-{tag}-{i}") for i in range(args.runs)]
        median = statistics.median(times)
        if "&" not in scope:
            slowest_one = max(slowest_one, median)
            versus = ""
        else:
            versus = f"({median / slowest_one:.2f}x the slowest one-site boot)"
        runs = ", ".join(f"{t:.1f}" for t in times)
        print(f"  {label:8} {scope:45} {median:6.1f} s  {versus}  runs: {runs}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "debian.img"
        block = bytes(range(256)) * 4096
        with path.open("wb") as f:
            for _ in range(args.mib):
                f.write(block)
        print(f"\n{args.mib} MiB image create (POST + upload), through Berlin's gateway")
        alone = {}
        for site in ("Berlin", "Denver", "Paris"):
            alone[site] = upload(lab, f"<glance: {site}>", path, f"bw-{tag}-{site}")
            print(f"  {site:22} {alone[site]:6.1f} s")
        with PeakRss(lab.gateway_pid()) as rss:
            both = upload(lab, "<glance: Berlin&Denver&Paris>", path, f"bw-{tag}-all")
        slowest = max(alone.values())
        ratio = both / slowest
        print(f"  {'Berlin&Denver&Paris':22} {both:6.1f} s  ({ratio:.2f}x the slowest alone)")
        growth = (rss.peak - rss.base) / 1024
        print(
            f"  Berlin's gateway RSS: {rss.base / 1024:.1f} MiB before, peak "
            f"{rss.peak / 1024:.1f} MiB (+{growth:.1f} MiB)"
        )


if __name__ == "__main__":
    main()
