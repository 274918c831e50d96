"""Failover and partition figures (issue 4), on loopback.

- ``<compute: Down|Up>``: time to an answer the first time (Down's circuit
  closed) and after (circuit open), for a site that refuses connections and
  for one whose link is cut (connections hang until the connect timeout);
- latency of requests to a healthy site while another site is unreachable,
  against the same with every site up.

    .venv/bin/python tests/bench/bench_failover.py
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_gateway import Processes, free_port, wait_http  # noqa: E402

CONNECT_TIMEOUT = 1.0
N = 200


def blackhole() -> tuple[socket.socket, list[socket.socket], int]:
    """A port whose accept queue is full: new connections hang (a cut link)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    return listener, fillers, port


def p50(client: httpx.Client, url: str, headers: dict[str, str], n: int = N) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url, headers=headers)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return statistics.median(times) * 1e3


def main() -> None:
    procs = Processes()
    listener, fillers, cut_port = blackhole()
    back, gw, refused = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "gw.yaml"
        cfg.write_text(
            f"""site: Here
sites:
  Here: {{endpoints: {{compute: "http://127.0.0.1:{gw}/compute"}}}}
  Up: {{endpoints: {{compute: "http://127.0.0.1:{back}"}}}}
  Refusing: {{endpoints: {{compute: "http://127.0.0.1:{refused}"}}}}
  Cut: {{endpoints: {{compute: "http://127.0.0.1:{cut_port}"}}}}
backends: {{compute: "http://127.0.0.1:{back}"}}
timeouts: {{connect: {CONNECT_TIMEOUT}, total: 5}}
circuit: {{failures: 1, cooldown: 600, probe_interval: 600}}
"""
        )
        try:
            procs.start(sys.executable, str(HERE / "slow_backend.py"), str(back), "0", cpu="0")
            procs.start(
                str(Path(sys.executable).parent / "scoped"),
                "gateway", "--config", str(cfg), "--listen", f"127.0.0.1:{gw}",
                cpu="1",
            )  # fmt: skip
            url = f"http://127.0.0.1:{gw}/compute/v2.1/servers"
            wait_http(url, procs)
            with httpx.Client(timeout=30) as c:
                healthy = {"X-Scope": "<compute: Up>"}
                base = p50(c, url, healthy)
                print(
                    f"connect timeout {CONNECT_TIMEOUT * 1e3:.0f} ms; circuit opens after 1 failure"
                )
                print(f"{'scope':32} {'first (closed)':>15} {'after (open)':>13}  sites")
                for down in ("Refusing", "Cut"):
                    scope = {"X-Scope": f"<compute: {down}|Up>"}
                    t = time.perf_counter()
                    r = c.get(url, headers=scope)
                    first = (time.perf_counter() - t) * 1e3
                    first_sites = r.headers["x-scope-sites"]
                    after = p50(c, url, scope, 50)
                    r = c.get(url, headers=scope)
                    print(
                        f"<compute: {down}|Up>".ljust(32)
                        + f" {first:13.1f}ms {after:11.2f}ms  {first_sites} -> "
                        + r.headers["x-scope-sites"]
                    )
                cut = p50(c, url, healthy)
            print(
                f"\nrequests to Up (c=1, p50 of {N}): all sites up {base:.2f} ms; "
                f"with Refusing and Cut unreachable {cut:.2f} ms"
            )
        finally:
            procs.stop()
            for s in (listener, *fillers):
                s.close()


if __name__ == "__main__":
    main()
