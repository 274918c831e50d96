"""A thousand sites: one gateway in front of N stand-in compute sites (one
process, one port per site: tests/bench/site_farm.py), measured as the
1000-sites issue's table: ``*`` list latency and the gateway's CPU per site
call, 8 clients at once, paging, header and error sizes, silent and refused
sites, ``*?``.

    .venv/bin/python tests/bench/bench_scale.py [--sites 200,1000] [--requests 30]
        [--quick] [--profile PATH]

Everything on 127.0.0.1; the gateway is pinned to CPU 1, the sites and the
clients to CPU 0. Compare figures within one run.

``--quick`` measures only the ``*`` list (p50 and the gateway's CPU). With
``--profile PATH``, after the measured requests, py-spy (``pip install
py-spy``) samples the gateway through as many more ``*`` lists and writes
its stacks to PATH (py-spy's raw format, one ``frame;frame;... count`` line a
stack; ``PATH-N`` for each N when there are several), then the top functions
by own and inclusive samples are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from bench_gateway import PY, SCOPED, Processes, free_port, tree_cpu, wait_http

HERE = Path(__file__).resolve().parent
ITEMS = 5  # per site (site_farm.ITEMS)


def closed_port() -> int:
    """A port nobody listens on: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Federation:
    """A farm of N sites and a gateway in front (S0 is the gateway's own)."""

    def __init__(self, procs: Processes, tmp: Path, kinds: list[tuple[str, float]]) -> None:
        self.n = len(kinds)
        ports_file = tmp / f"ports-{self.n}-{id(kinds)}"
        served = [(k, d) for k, d in kinds if k != "refused"]
        spec = ",".join(f"{k}:{d * 1000:.0f}" for k, d in served)
        procs.start(PY, str(HERE / "site_farm.py"), str(ports_file), spec, cpu="0")
        deadline = time.monotonic() + 120
        while not ports_file.exists():
            if time.monotonic() > deadline:
                raise SystemExit("the site farm did not come up")
            time.sleep(0.2)
        farm = iter(int(p) for p in ports_file.read_text().split())
        ports = [next(farm) if k != "refused" else closed_port() for k, _ in kinds]
        self.port = free_port()
        lines = [
            "site: S0",
            f"limits: {{max_fanout: {2 * self.n}}}",
            "timeouts: {connect: 2.0, total: 10.0}",
            f'backends: {{compute: "http://127.0.0.1:{ports[0]}"}}',
            "sites:",
            f'  S0: {{endpoints: {{compute: "http://127.0.0.1:{self.port}/compute"}}}}',
        ]
        lines += [
            f'  S{i}: {{endpoints: {{compute: "http://127.0.0.1:{ports[i]}"}}}}'
            for i in range(1, self.n)
        ]
        config = tmp / f"scale-{self.n}-{id(kinds)}.yaml"
        config.write_text("\n".join(lines) + "\n")
        self.proc = procs.start(
            SCOPED, "gateway", "--config", str(config), "--listen", f"127.0.0.1:{self.port}",
            cpu="1",
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/compute/v2.1/servers"
        wait_http(f"http://127.0.0.1:{self.port}/healthz", procs, timeout=60)

    def get(self, client: httpx.Client, scope: str, url: str | None = None) -> httpx.Response:
        return client.get(url or self.url, headers={"X-Scope": scope})


def timed(
    fn: Callable[[], httpx.Response], n: int, pid: int | None = None
) -> tuple[float, httpx.Response, list[float]]:
    """p50 of ``n`` calls, the last answer, and the CPU seconds process
    ``pid`` spent on each call (empty where the kernel does not say)."""
    times, cpu = [], []
    resp = fn()
    for _ in range(n):
        before = thread_cpu(pid) if pid is not None else None
        t = time.perf_counter()
        resp = fn()
        times.append(time.perf_counter() - t)
        if pid is not None and before is not None:
            after = thread_cpu(pid)
            if after is not None:
                cpu.append(after - before)
    return statistics.median(times), resp, cpu


def thread_cpu(pid: int) -> float | None:
    """CPU seconds of ``pid``'s threads so far, to the microsecond
    (``se.sum_exec_runtime`` of /proc/PID/task/*/sched; None without it):
    per request, where /proc/PID/stat counts 10 ms ticks. On a shared
    machine the least of several requests is the steadiest figure."""
    total, found = 0.0, False
    for sched in Path(f"/proc/{pid}/task").glob("*/sched"):
        try:
            text = sched.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("se.sum_exec_runtime"):
                total += float(line.split(":")[1]) / 1000
                found = True
                break
    return total if found else None


async def clients_at_once(
    url: str, scope: str, clients: int, seconds: float
) -> tuple[float, float]:
    """(req/s, p50 s) of ``clients`` clients sending one after another."""
    times: list[float] = []
    end = time.monotonic() + seconds

    async def one(client: httpx.AsyncClient) -> None:
        while time.monotonic() < end:
            t = time.perf_counter()
            resp = await client.get(url, headers={"X-Scope": scope})
            if resp.status_code != 200:
                raise SystemExit(f"{resp.status_code}: {resp.text[:200]}")
            times.append(time.perf_counter() - t)

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(one(client) for _ in range(clients)))
    return len(times) / seconds, statistics.median(times)


def profiled(fed: Federation, client: httpx.Client, n_requests: int, path: Path) -> None:
    """``n_requests`` ``*`` lists with py-spy sampling the gateway; the top costs."""
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    argv = [spy, "record", "-p", str(fed.proc.pid), "-o", str(path), "-f", "raw", "-r", "1000"]
    argv += ["--nolineno", "--nonblocking"]  # by function; no pause of the gateway per sample
    with open(os.devnull, "wb") as quiet:
        spying = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=quiet, stderr=quiet)
    time.sleep(1.0)  # py-spy attaches
    try:
        for _ in range(n_requests):
            assert fed.get(client, "<nova: *>").status_code == 200
    finally:
        spying.send_signal(signal.SIGINT)
        spying.wait(timeout=60)
    print(f"  profile of {n_requests} * lists: {path}")
    top_costs(path)


def top_costs(path: Path, count: int = 25) -> None:
    """Own and inclusive samples per function in a py-spy raw profile."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        samples = int(n)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        print("  (no samples)")
        return
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"  top {count} by {title} samples (of {total}):")
        for frame, samples in counter.most_common(count):
            print(f"    {100 * samples / total:5.1f}%  {frame}")


def uniform(fed: Federation, n_requests: int, quick: bool, profile: Path | None) -> None:
    with httpx.Client(timeout=60) as client:
        before = tree_cpu(fed.proc.pid)
        p50, resp, each = timed(lambda: fed.get(client, "<nova: *>"), n_requests, fed.proc.pid)
        cpu = (tree_cpu(fed.proc.pid) - before) / (n_requests + 1)
        assert resp.status_code == 200, resp.text[:300]
        items = len(resp.json()["servers"])
        print(f"  * list, every site 20 ms away: p50 {p50 * 1e3:.1f} ms ({items} items)")
        least = f" (least of {len(each)}: {min(each) / fed.n * 1e6:.0f} us)" if each else ""
        print(
            f"  gateway CPU per * request: {cpu * 1e3:.1f} ms, per site call "
            f"{cpu / fed.n * 1e6:.0f} us{least}"
        )
        if profile is not None:
            profiled(fed, client, n_requests, profile)
        if quick:
            return
        print(f"  X-Scope-Sites: {len(resp.headers['x-scope-sites'])} bytes")
        rps, p50c = asyncio.run(clients_at_once(fed.url, "<nova: *>", 8, 10.0))
        print(f"  8 clients at once: {rps:.1f} req/s, p50 {p50c * 1e3:.0f} ms")
        longest, over, seen, pages = 0, 0, 0, 0
        url: str | None = fed.url + "?limit=50&sort_key=name&sort_dir=asc"
        limit_pages = fed.n * ITEMS // 50 + 5
        while url is not None and pages < limit_pages:
            page = fed.get(client, "<nova: *>", url)
            assert page.status_code == 200, page.text[:300]
            body = page.json()
            seen += len(body["servers"])
            pages += 1
            links = [ln["href"] for ln in body.get("servers_links", []) if ln["rel"] == "next"]
            url = links[0] if links else None
            if url is not None:
                longest = max(longest, len(url))
                over += len(url) > 8192
        print(
            f"  paging by 50, sorted: {pages} pages, {seen} of {fed.n * ITEMS} items, "
            f"longest next URL {longest / 1024:.1f} KB, {over} over 8 KB"
        )
        metrics = client.get(f"http://127.0.0.1:{fed.port}/metrics").text
        print(f"  /metrics: {len(metrics) / 1024:.0f} KB")


def spread(fed: Federation, n_requests: int, slowest: float) -> None:
    with httpx.Client(timeout=60) as client:
        p50, resp, _ = timed(lambda: fed.get(client, "<nova: *>"), n_requests)
        assert resp.status_code == 200, resp.text[:300]
        print(
            f"  * list, sites 10-150 ms away: p50 {p50 * 1e3:.1f} ms "
            f"(slowest site {slowest * 1e3:.0f} ms)"
        )


def failing(fed: Federation) -> None:
    with httpx.Client(timeout=120) as client:
        t = time.perf_counter()
        strict = fed.get(client, "<nova: *>")
        took = time.perf_counter() - t
        print(
            f"  strict * with 5% refused + 5% silent: {strict.status_code} after {took:.1f} s, "
            f"error body {len(strict.content) / 1024:.1f} KB, "
            f"X-Scope-Sites {len(strict.headers.get('x-scope-sites', ''))} bytes"
        )
        for attempt in (1, 2):
            t = time.perf_counter()
            lenient = fed.get(client, "<nova: *?>")
            took = time.perf_counter() - t
            items = len(lenient.json().get("servers", [])) if lenient.status_code == 200 else 0
            print(
                f"  *? (every site optional), request {attempt}: {lenient.status_code} after "
                f"{took:.1f} s, {items} items"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", default="200,1000")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="only the * list: p50 and CPU")
    ap.add_argument("--profile", type=Path, help="py-spy's raw stacks of the gateway to PATH")
    args = ap.parse_args()
    widths = [int(x) for x in args.sites.split(",")]
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="scoped-scale-") as tmp_dir:
        tmp = Path(tmp_dir)
        try:
            for n in widths:
                print(f"\nN = {n}")
                fed = Federation(procs, tmp, [("ok", 0.020)] * n)
                profile = args.profile
                if profile is not None and len(widths) > 1:
                    profile = profile.with_name(f"{profile.name}-{n}")
                uniform(fed, args.requests, args.quick, profile)
                if args.quick:
                    procs.stop()
                    procs.procs.clear()
                    procs.logs.clear()
                    continue
                delays = [0.010 + (i * 7919 % 141) / 1000 for i in range(n)]
                fed = Federation(procs, tmp, [("ok", d) for d in delays])
                spread(fed, args.requests, max(delays))
                kinds = [
                    ("refused", 0.0) if i % 20 == 7 else ("silent", 0.0) if i % 20 == 13
                    else ("ok", 0.020)
                    for i in range(n)
                ]  # fmt: skip
                failing(Federation(procs, tmp, kinds))
                procs.stop()
                procs.procs.clear()
                procs.logs.clear()
        finally:
            procs.stop()


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as err:
        raise SystemExit(str(err)) from None
