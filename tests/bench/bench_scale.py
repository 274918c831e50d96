"""A thousand sites: one gateway in front of N stand-in compute sites (one
process, one port per site: tests/bench/site_farm.py), measured as the
1000-sites issue's table: ``*`` list latency and the gateway's CPU per site
call, 8 clients at once, paging, header and error sizes, silent and refused
sites, ``*?``, paging and a ``*`` list behind a stock nginx and HAProxy, and
8 clients at once against ``--workers 1`` and ``--workers 2``.

    .venv/bin/python tests/bench/bench_scale.py [--sites 200,1000] [--requests 30]
        [--quick] [--profile PATH]

Everything on 127.0.0.1; the gateway is pinned to CPU 1, the sites and the
clients to CPU 0 (the workers rows: the gateway on both CPUs, once with one
worker, once with two). The gateway keeps long paging markers in a
memcached of the benchmark's own (when /usr/bin/memcached is there).
Compare figures within one run.

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

from tests.stock_proxies import HAPROXY, NGINX, stock_haproxy, stock_nginx

HERE = Path(__file__).resolve().parent
MEMCACHED = "/usr/bin/memcached"
ITEMS = 5  # per site (site_farm.ITEMS)


def closed_port() -> int:
    """A port nobody listens on: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Federation:
    """A farm of N sites and a gateway in front (S0 is the gateway's own)."""

    def __init__(
        self,
        procs: Processes,
        tmp: Path,
        kinds: list[tuple[str, float]],
        memcached: str | None = None,
    ) -> None:
        self.n = len(kinds)
        self.procs = procs
        ports_file = tmp / f"ports-{self.n}-{id(kinds)}"
        served = [(k, d) for k, d in kinds if k != "refused"]
        spec = ",".join(f"{k}:{d * 1000:.0f}" for k, d in served)
        self.farm = procs.start(PY, str(HERE / "site_farm.py"), str(ports_file), spec, cpu="0")
        deadline = time.monotonic() + 120
        while not ports_file.exists():
            if time.monotonic() > deadline:
                raise SystemExit("the site farm did not come up")
            time.sleep(0.2)
        farm = iter(int(p) for p in ports_file.read_text().split())
        ports = [next(farm) if k != "refused" else closed_port() for k, _ in kinds]
        self.served = [p for p, (k, _) in zip(ports, kinds, strict=True) if k == "ok"]
        """The ports of the sites that answer."""
        self.tmp = tmp
        self.port = free_port()
        lines = [
            "site: S0",
            f"limits: {{max_fanout: {2 * self.n}, max_concurrency: {4 * self.n}}}",
            "timeouts: {connect: 2.0, total: 10.0}",
            f'backends: {{compute: "http://127.0.0.1:{ports[0]}"}}',
            *([f'paging: {{memcached: ["{memcached}"]}}'] if memcached else []),
            "sites:",
            f'  S0: {{endpoints: {{compute: "http://127.0.0.1:{self.port}/compute"}}}}',
        ]
        lines += [
            f'  S{i}: {{endpoints: {{compute: "http://127.0.0.1:{ports[i]}"}}}}'
            for i in range(1, self.n)
        ]
        self.config = tmp / f"scale-{self.n}-{id(kinds)}.yaml"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc = procs.start(
            SCOPED, "gateway", "--config", str(self.config), "--listen",
            f"127.0.0.1:{self.port}", cpu="1",
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


def kernel_cpu(pid: int) -> float:
    """System CPU seconds of ``pid`` so far (stime, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


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
        kernel_before = kernel_cpu(fed.proc.pid)
        farm_before = tree_cpu(fed.farm.pid)
        p50, resp, each = timed(lambda: fed.get(client, "<nova: *>"), n_requests, fed.proc.pid)
        cpu = (tree_cpu(fed.proc.pid) - before) / (n_requests + 1)
        kernel = (kernel_cpu(fed.proc.pid) - kernel_before) / (n_requests + 1)
        farm = (tree_cpu(fed.farm.pid) - farm_before) / (n_requests + 1)
        assert resp.status_code == 200, resp.text[:300]
        items = len(resp.json()["servers"])
        print(f"  * list, every site 20 ms away: p50 {p50 * 1e3:.1f} ms ({items} items)")
        least = f" (least of {len(each)}: {min(each) / fed.n * 1e6:.0f} us)" if each else ""
        print(
            f"  gateway CPU per * request: {cpu * 1e3:.1f} ms, per site call "
            f"{cpu / fed.n * 1e6:.0f} us{least}"
        )
        print(
            f"    of which in the kernel: {kernel / fed.n * 1e6:.0f} us a site call "
            "(loopback TCP: the sites' receiving side too)"
        )
        print(f"  the site farm's CPU per * request: {farm * 1e3:.1f} ms")
        bare_floor(fed, n_requests)
        if profile is not None:
            profiled(fed, client, n_requests, profile)
        if quick:
            return
        print(f"  X-Scope-Sites: {len(resp.headers['x-scope-sites'])} bytes")
        rps, p50c = asyncio.run(clients_at_once(fed.url, "<nova: *>", 8, 10.0))
        print(f"  8 clients at once: {rps:.1f} req/s, p50 {p50c * 1e3:.0f} ms")
        print(f"  paging by 50, sorted: {paging(client, fed.url, fed.n)}")
        metrics = client.get(f"http://127.0.0.1:{fed.port}/metrics").text
        print(f"  /metrics: {len(metrics) / 1024:.0f} KB")
    behind_stock_proxies(fed)


def bare_floor(fed: Federation, n_requests: int) -> None:
    """The same exchanges with no gateway (tests/bench/bare_fanout.py), on
    the gateway's CPU: what a site call costs at the least."""
    ports = fed.tmp / f"served-{fed.n}"
    ports.write_text("\n".join(map(str, fed.served)) + "\n")
    argv = ["taskset", "-c", "1", PY, str(HERE / "bare_fanout.py"), str(n_requests), str(ports)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    print(out.stdout.rstrip())


def paging(client: httpx.Client, base: str, n: int) -> str:
    """Page through a sorted ``*`` list by 50 from ``base`` (a gateway, or a
    proxy in front of one; links followed at ``base``'s origin)."""
    origin = base.split("/compute/", 1)[0]
    longest, over, seen, pages = 0, 0, [], 0
    url: str | None = base + "?limit=50&sort_key=name&sort_dir=asc"
    while url is not None and pages < n * ITEMS // 50 + 5:
        page = client.get(url, headers={"X-Scope": "<nova: *>"})
        if page.status_code != 200:
            return f"{page.status_code} at page {pages + 1} ({len(url) / 1024:.1f} KB URL)"
        body = page.json()
        seen += [s["id"] for s in body["servers"]]
        pages += 1
        links = [ln["href"] for ln in body.get("servers_links", []) if ln["rel"] == "next"]
        url = None
        if links:
            longest = max(longest, len(links[0]))
            over += len(links[0]) > 8192
            url = origin + "/compute/" + links[0].split("/compute/", 1)[1]
    once = "every item once" if len(seen) == len(set(seen)) == n * ITEMS else "ITEMS MISSING"
    return (
        f"{pages} pages, {len(seen)} of {n * ITEMS} items ({once}), "
        f"longest next URL {longest / 1024:.2f} KB, {over} over 8 KB"
    )


def behind_stock_proxies(fed: Federation) -> None:
    """A ``*`` list and paging through a stock nginx and a stock HAProxy."""
    for name, binary, make in (("nginx", NGINX, stock_nginx), ("HAProxy", HAPROXY, stock_haproxy)):
        if not os.path.exists(binary):
            print(f"  behind a stock {name}: not measured ({binary} missing)")
            continue
        port = free_port()
        folder = Path(tempfile.mkdtemp(prefix=f"scoped-scale-{name}-"))
        proc = fed.procs.start(*make(folder / "run", port, fed.port, binary), cpu="0")
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{name} did not listen") from None
                    time.sleep(0.05)
            base = f"http://127.0.0.1:{port}/compute/v2.1/servers"
            with httpx.Client(timeout=60) as client:
                star = client.get(base, headers={"X-Scope": "<nova: *>"})
                items = len(star.json()["servers"]) if star.status_code == 200 else 0
                pages = paging(client, base, fed.n)
            print(f"  behind a stock {name}: * list {star.status_code} ({items} items); "
                  f"paging {pages}")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(10)
            fed.procs.procs.remove(proc)  # ended: not a failure to watch for
            shutil.rmtree(folder, ignore_errors=True)


def with_workers(procs: Processes, tmp: Path, n: int) -> None:
    """8 clients at once against ``--workers 1`` and ``--workers 2``. The
    sites here are one nginx listening on N ports (a static answer, no
    delay, ~10 µs a request): the site farm (~16 µs an answer, and a
    timer per millisecond of delay) would take a core of the two.
    Nothing pinned: the gateway, nginx and the clients share both CPUs."""
    if not os.path.exists(NGINX):
        print(f"  8 clients at once with workers: not measured ({NGINX} missing)")
        return
    ports: list[int] = []
    while len(ports) < n:  # free_port can give a port twice
        port = free_port()
        if port not in ports:
            ports.append(port)
    items = ", ".join(
        f'{{"id": "$server_port-{i}", "name": "vm-$server_port-{i}"}}' for i in range(ITEMS)
    )
    folder = tmp / f"nginx-farm-{n}"
    folder.mkdir()
    listens = "\n".join(f"    listen 127.0.0.1:{p};" for p in ports)
    (folder / "nginx.conf").write_text(
        f"""worker_processes 1; pid {folder}/nginx.pid; error_log {folder}/error.log;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 10000000; keepalive_timeout 75;
  client_body_temp_path {folder}; proxy_temp_path {folder}; fastcgi_temp_path {folder};
  uwsgi_temp_path {folder}; scgi_temp_path {folder};
  server {{
{listens}
    location / {{ default_type application/json; return 200 '{{"servers": [{items}]}}'; }}
  }}
}}
"""
    )
    farm = procs.start(NGINX, "-p", str(folder), "-c", "nginx.conf", "-g", "daemon off;", cpu="0,1")
    config = folder / "scoped.yaml"
    sites = "\n".join(
        f'  S{i}: {{endpoints: {{compute: "http://127.0.0.1:{p}"}}}}'
        for i, p in enumerate(ports)
        if i
    )
    config.write_text(
        f"""site: S0
limits: {{max_fanout: {2 * n}, max_concurrency: {16 * n}}}
backends: {{compute: "http://127.0.0.1:{ports[0]}"}}
sites:
  S0: {{}}
{sites}
"""
    )
    try:
        for workers in (1, 2):
            port = free_port()
            proc = procs.start(
                SCOPED, "gateway", "--config", str(config), "--listen", f"127.0.0.1:{port}",
                "--workers", str(workers), cpu="0,1",
            )  # fmt: skip
            try:
                wait_http(f"http://127.0.0.1:{port}/healthz", procs, timeout=60)
                time.sleep(2.0)  # every worker up
                url = f"http://127.0.0.1:{port}/compute/v2.1/servers"
                asyncio.run(clients_at_once(url, "<nova: *>", 8, 2.0))  # warm the pools
                rps, p50 = asyncio.run(clients_at_once(url, "<nova: *>", 8, 10.0))
            finally:
                proc.terminate()
                proc.wait(30)
                procs.procs.remove(proc)
            print(
                f"  8 clients at once, sites without delay (nginx), --workers {workers}: "
                f"{rps:.1f} req/s, p50 {p50 * 1e3:.0f} ms"
            )
    finally:
        farm.terminate()
        farm.wait(10)
        procs.procs.remove(farm)


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
    store, store_procs = None, Processes()  # outlives each width's processes
    if os.path.exists(MEMCACHED) and not args.quick:
        store_port = free_port()
        store_procs.start(
            MEMCACHED, "-l", "127.0.0.1", "-p", str(store_port), "-U", "0", "-m", "64",
            "-u", "nobody", cpu="0",
        )  # fmt: skip
        store = f"127.0.0.1:{store_port}"
    print(f"paging markers kept in: {store or 'the links (no memcached here)'}")
    with tempfile.TemporaryDirectory(prefix="scoped-scale-") as tmp_dir:
        tmp = Path(tmp_dir)
        try:
            for n in widths:
                print(f"\nN = {n}")
                fed = Federation(procs, tmp, [("ok", 0.020)] * n, store)
                profile = args.profile
                if profile is not None and len(widths) > 1:
                    profile = profile.with_name(f"{profile.name}-{n}")
                uniform(fed, args.requests, args.quick, profile)
                if not args.quick:
                    with_workers(procs, tmp, n)
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
            store_procs.stop()


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as err:
        raise SystemExit(str(err)) from None
