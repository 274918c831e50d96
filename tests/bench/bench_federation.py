"""Independent sites on the lab: what a token of every site (Keystone-to-Keystone,
``tokens.mode: federated``) costs, beside today's validation at the origin
(``tokens.mode: origin``), with real Keystones, Apache + mod_auth_mellon and
the lab's WAN (Berlin-Denver 75 ms, Berlin-Paris 5 ms each way).

    .venv/bin/scoped lab up --dir lab      # first
    .venv/bin/python tests/bench/bench_federation.py [--dir lab] [--reps 5] [--steady 30]

The bench starts two Berlin gateways of its own beside the lab's (copies of
``lab/berlin/scoped.yaml``: Denver and Paris ``origin`` in one, ``federated``
in the other, on free ports of 127.0.0.1), each warmed up with a token of its
own, and stops them by PID at the end; the lab itself is only read.

1. ``GET /compute/v2.1/servers`` as ``alice`` (a member of Berlin's ``demo``)
   with ``X-Scope: <nova: Denver>`` and ``<nova: Paris>``: the first request
   with a fresh token (federated: the exchange is in it, and the site's
   Keystone then validates a token it has never seen), median and range over
   ``--reps`` tokens, each issued for that one (mode, site); then the steady
   state with the same token, p50 and p90 over ``--steady`` requests. Why:
   an exchange is paid by a user's first request to each site, and must cost
   nothing after it. The exchange alone (``Federation.exchange``, the
   gateway's own code, run here) says how much of the first request it is.
   In origin mode the remote site validates the Berlin token at Berlin and,
   its project IDs being its own, lists none of alice's servers (200, empty):
   that column is a latency reference, not a working alternative.
2. ``--loop`` requests to ``<nova: Berlin&Denver&Paris>`` with one token:
   ``scoped_token_exchanges_total`` on the federated gateway's ``/metrics``
   before and after. Why: one exchange per (user token, site), so 2 (Denver,
   Paris), never one per request.
3. Resident memory of each site's Apache (mod_auth_mellon, in front of its
   Keystone: the process group of ``run/<site>-apache.pid``) and the lab's
   total (``scoped lab status``), before and after the loop.

An end-to-end run against the lab skews every figure: the bench waits (up to
``--wait`` s) until no ``pytest ... tests/e2e`` runs and every site's Apache,
Keystone and Nova API are up, and says if it gave up.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from scoped.config import load_config
from scoped.federation import Federation

ROOT = Path(__file__).resolve().parents[2]
REMOTE = ("Denver", "Paris")
SITES = ("Berlin", *REMOTE)
MODES = ("origin", "federated")
SERVERS = "/compute/v2.1/servers"
ALL = "<nova: Berlin&Denver&Paris>"


def user_token(cloud: dict[str, Any]) -> str:
    """A fresh token of the cloud's user (a new Keystone token every call)."""
    auth = cloud["auth"]
    plugin = v3.Password(
        auth_url=auth["auth_url"],
        username=auth["username"],
        password=auth["password"],
        project_name=auth["project_name"],
        user_domain_name=auth["user_domain_name"],
        project_domain_name=auth["project_domain_name"],
    )
    token = ks_session.Session(auth=plugin).get_token()
    assert token is not None
    return token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Gateway:
    """A Berlin gateway of the bench's own: Denver and Paris in ``mode``."""

    def __init__(self, lab: Path, mode: str, tmp: Path) -> None:
        self.mode = mode
        conf = yaml.safe_load((lab / "berlin" / "scoped.yaml").read_text())
        for site in REMOTE:
            conf["sites"][site]["tokens"] = {"mode": mode}
        self.config = tmp / f"berlin-{mode}.yaml"
        self.config.write_text(yaml.safe_dump(conf, sort_keys=False))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = tmp / f"gateway-{mode}.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(lab / "venv" / "bin" / "scoped"), "gateway", "--config", str(self.config),
             "--listen", self.url.removeprefix("http://"), "--log-level", "warning"],
            stdout=self._out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gateway ({self.mode}) exited; log: {self.log}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"gateway ({self.mode}) not up in {timeout:g} s; log: {self.log}")

    def stop(self) -> None:
        """This gateway's process, by its PID (nothing else)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()

    def rss_mb(self) -> float:
        return rss_kb([self.proc.pid]) / 1024

    def exchanges(self) -> dict[str, float]:
        """``scoped_token_exchanges_total`` by "site outcome"."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        out: dict[str, float] = {}
        for m in re.finditer(r"^scoped_token_exchanges_total\{(.*)\} (\S+)$", text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[f"{labels.get('site')} {labels.get('outcome')}"] = float(m.group(2))
        return out


def get(client: httpx.Client, url: str, token: str, scope: str) -> tuple[float, int, int]:
    """(seconds, status, servers listed) of one list."""
    start = time.perf_counter()
    resp = client.get(url + SERVERS, headers={"X-Auth-Token": token, "X-Scope": scope})
    took = time.perf_counter() - start
    try:
        listed = len(resp.json().get("servers", []))
    except ValueError:
        listed = -1
    return took, resp.status_code, listed


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(m.group(1)) if m else 0
    return total


def apache_group(lab: Path, site: str) -> list[int]:
    """The live members of the site's Apache process group (as ``deploy/lab/lab``
    counts them: same group, started no earlier than the pidfile says)."""
    pidfile = lab / "run" / f"{site.lower()}-apache.pid"
    if not pidfile.exists():
        return []  # the site is down
    leader, start = (int(x) for x in pidfile.read_text().split()[:2])
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # after "pid (comm) ": state ppid pgrp ... starttime is field 22 overall
        if int(fields[2]) == leader and int(fields[19]) >= start:
            members.append(int(proc.name))
    return sorted(members)


def lab_memory(lab: Path) -> tuple[dict[str, tuple[int, float]], int]:
    """Per site (Apache processes, MB), and the lab's total MB by ``scoped lab status``."""
    apache = {}
    for site in SITES:
        pids = apache_group(lab, site)
        apache[site] = (len(pids), rss_kb(pids) / 1024)
    status = subprocess.run(
        [str(lab / "venv" / "bin" / "scoped"), "lab", "status", "--dir", str(lab)],
        capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip
    m = re.search(r"total resident memory of lab processes: (\d+) MB", status)
    return apache, int(m.group(1)) if m else -1


def pytests() -> list[tuple[str, list[str]]]:
    """(PID, argv) of every pytest running on this machine."""
    pids = subprocess.run(
        ["pgrep", "-f", "pytest"], capture_output=True, text=True, check=False
    ).stdout.split()
    found = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if any("pytest" in a for a in argv):
            found.append((pid, argv))
    return found


def busy(lab: Path) -> str:
    """What keeps the lab from a fair measurement now ("" if nothing)."""
    running = [pid for pid, argv in pytests() if any(a.startswith("tests/e2e") for a in argv)]
    if running:
        return f"an e2e run (PIDs {' '.join(running)})"
    down = [
        f"{site} {service}"
        for site in SITES
        for service in ("apache", "keystone", "nova-api")
        if not (lab / "run" / f"{site.lower()}-{service}.pid").exists()
    ]
    return f"down: {', '.join(down)}" if down else ""


def wait_for_lab(lab: Path, limit: float) -> str:
    """Waits (bounded) until no e2e pytest runs against the lab and every
    site's Apache, Keystone and Nova API run; says how it went (other test
    runs, which do not touch the lab, only share the CPU: counted)."""
    start = time.monotonic()
    announced = ""
    while True:
        why = busy(lab)
        waited = time.monotonic() - start
        if not why:
            others = len(pytests())
            also = f"; {others} other pytest processes on this machine" if others else ""
            return f"no e2e run, every site up (waited {waited:.0f} s){also}"
        if waited >= limit:
            return f"MEASURED ANYWAY after {limit:.0f} s: {why}"
        if why != announced:
            print(f"waiting (<= {limit:.0f} s): {why}")
            announced = why
        time.sleep(10)


def ms(x: float) -> str:
    return f"{x * 1000:7.0f}"


def spread(xs: list[float]) -> str:
    return f"{ms(statistics.median(xs))} ms ({min(xs) * 1000:.0f}-{max(xs) * 1000:.0f})"


def exchange_traced(fed: Federation, site: str, token: str) -> tuple[float, list[str]]:
    """One exchange, timed, with every HTTP call it made (method, host:port and
    path, status, ms; no header, no body: tokens are never printed)."""
    calls: list[str] = []
    request = ks_session.Session.request

    def traced(self: ks_session.Session, url: str, method: str, **kw: Any) -> Any:
        start = time.perf_counter()
        status: object = "error"
        try:
            resp = request(self, url, method, **kw)
            status = resp.status_code
            return resp
        finally:
            took = (time.perf_counter() - start) * 1000
            where = urlsplit(url)
            calls.append(f"{method:5} {where.netloc}{where.path} -> {status} {took:.0f} ms")

    ks_session.Session.request = traced  # type: ignore[method-assign,assignment]
    start = time.perf_counter()
    try:
        fed.exchange(site, token)
    except Exception as err:  # reported, not raised: the bench goes on
        calls.append(f"FAILED: {err}")
    finally:
        ks_session.Session.request = request  # type: ignore[method-assign]
    return time.perf_counter() - start, calls


def main() -> None:  # noqa: PLR0915 (one table after another)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(ROOT / "lab"))
    parser.add_argument("--reps", type=int, default=5, help="fresh tokens per (mode, site)")
    parser.add_argument("--steady", type=int, default=30, help="requests after the first")
    parser.add_argument("--loop", type=int, default=100, help="requests to 3 sites, one token")
    parser.add_argument("--wait", type=float, default=1200.0, help="max s to wait for e2e")
    args = parser.parse_args()
    lab = Path(args.dir).resolve()
    clouds = yaml.safe_load((lab / "clouds.yaml").read_text())["clouds"]
    alice = clouds["Berlin-alice"]
    print(wait_for_lab(lab, args.wait))

    tmp = Path(tempfile.mkdtemp(prefix="bench-federation-"))
    gateways = {mode: Gateway(lab, mode, tmp) for mode in MODES}
    try:
        for gw in gateways.values():
            gw.wait()
        clients = {mode: httpx.Client(timeout=120) for mode in MODES}
        # Warm-up, a token of its own: connections, imports, each site's caches.
        warm = user_token(alice)
        for mode in MODES:
            for site in SITES:
                get(clients[mode], gateways[mode].url, warm, f"<nova: {site}>")
        print(
            f"gateways of the bench: origin {gateways['origin'].url} (PID "
            f"{gateways['origin'].proc.pid}), federated {gateways['federated'].url} "
            f"(PID {gateways['federated'].proc.pid})"
        )

        # 1. First request and steady state, the modes interleaved.
        first: dict[tuple[str, str], list[float]] = {}
        steady: dict[tuple[str, str], list[float]] = {}
        listed: dict[tuple[str, str], set[tuple[int, int]]] = {}
        for _ in range(args.reps):
            for site in REMOTE:
                for mode in MODES:
                    key = (mode, site)
                    token = user_token(alice)
                    scope = f"<nova: {site}>"
                    took, status, n = get(clients[mode], gateways[mode].url, token, scope)
                    first.setdefault(key, []).append(took)
                    listed.setdefault(key, set()).add((status, n))
                    for _ in range(args.steady):
                        took, status, n = get(clients[mode], gateways[mode].url, token, scope)
                        steady.setdefault(key, []).append(took)
                        listed[key].add((status, n))
        # The exchange alone, as the federated gateway makes it (its config).
        conf = load_config(gateways["federated"].config)
        fed = Federation(
            conf.site,
            f"{conf.backends['identity']}/v3",
            {n: s.tokens for n, s in conf.sites.items()},
            {n: s.timeouts for n, s in conf.sites.items()},
        )
        alone: dict[str, list[float]] = {}
        trace: dict[str, list[str]] = {}
        failed: dict[str, int] = {}
        for _ in range(args.reps):
            for site in REMOTE:
                took, calls = exchange_traced(fed, site, user_token(alice))
                if calls and calls[-1].startswith("FAILED"):
                    failed[site] = failed.get(site, 0) + 1
                else:
                    alone.setdefault(site, []).append(took)
                trace.setdefault(site, calls)

        print(
            f"\n1. GET {SERVERS} as alice through Berlin: first request with a fresh token "
            f"(median (min-max) of {args.reps}), then the same token (p50, p90 of "
            f"{args.reps}x{args.steady})"
        )
        print(
            f"{'site':7} {'tokens mode':12} {'first request':>22} {'steady p50':>11} "
            f"{'p90':>8}   answers (status, servers listed)"
        )
        for site in REMOTE:
            for mode in MODES:
                key = (mode, site)
                q = statistics.quantiles(steady[key], n=10)
                answers = ", ".join(f"{s} {n}" for s, n in sorted(listed[key]))
                print(
                    f"{site:7} {mode:12} {spread(first[key]):>22} "
                    f"{ms(statistics.median(steady[key]))} ms {ms(q[8])} ms   {answers}"
                )
            ok = spread(alone[site]) if site in alone else "-"
            bad = f"   {failed[site]} failed" if site in failed else ""
            print(f"{site:7} {'K2K alone':12} {ok:>22}{bad}")
        for site in REMOTE:
            print(f"  one exchange for {site}, call by call:")
            for line in trace[site]:
                print(f"    {line}")
        print(
            "origin: the remote Keystone is independent (its own project IDs), so the\n"
            "  Berlin token, validated at Berlin, lists the servers of Berlin's demo\n"
            "  project ID there: none, ever (200, empty): a latency reference only.\n"
            "  federated lists those of that site's own demo project (alice's, if she\n"
            "  has any there now: the count above)."
        )

        # 2 and 3. The loop on one token; exchanges and memory before and after.
        gw = gateways["federated"]
        token = user_token(alice)
        mem0, total0 = lab_memory(lab)
        gw_mem0 = gw.rss_mb()
        before = gw.exchanges()
        times: list[float] = []
        statuses: dict[int, int] = {}
        start = time.perf_counter()
        for _ in range(args.loop):
            took, status, _n = get(clients["federated"], gw.url, token, ALL)
            times.append(took)
            statuses[status] = statuses.get(status, 0) + 1
        wall = time.perf_counter() - start
        after = gw.exchanges()
        mem1, total1 = lab_memory(lab)
        gw_mem1 = gw.rss_mb()
        made = {s: after.get(s, 0.0) - before.get(s, 0.0) for s in sorted(set(after) | set(before))}
        count = sum(made.values())
        print(
            f"\n2. {args.loop} requests to {ALL} with one token (federated gateway): "
            f"{wall:.1f} s, p50 {ms(statistics.median(times)).strip()} ms, first "
            f"{ms(times[0]).strip()} ms, answers "
            + ", ".join(f"{s} x{c}" for s, c in sorted(statuses.items()))
        )
        print(
            f"   scoped_token_exchanges_total: +{count:.0f} ("
            + ", ".join(f"{s} +{v:.0f}" for s, v in made.items() if v)
            + f"), i.e. {count / wall * 60:.1f} per minute over the loop"
            f" ({count / args.loop:.2f} per request)"
        )
        print("\n3. Resident memory, before -> after the loop")
        for site in SITES:
            (n0, a0), (n1, a1) = mem0[site], mem1[site]
            print(
                f"   {site:7} Apache + mod_auth_mellon ({n0}->{n1} processes) "
                f"{a0:6.1f} -> {a1:6.1f} MB"
            )
        print(
            f"   lab total (scoped lab status)                      {total0:6d} -> {total1:6d} MB"
        )
        print(f"   the bench's federated gateway{'':22} {gw_mem0:6.1f} -> {gw_mem1:6.1f} MB")
        for client in clients.values():
            client.close()
    finally:
        for gw in gateways.values():
            gw.stop()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
