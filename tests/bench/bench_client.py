"""CPU per upstream call: scoped's client (scoped/upstream.py) beside
aiohttp's ClientSession (and aiosonic, if installed), 64 calls in flight to
nginx on 127.0.0.1. The client process is pinned to CPU 1, nginx to CPU 0.

    .venv/bin/python tests/bench/bench_client.py [--requests 40000]

Why scoped/h1.py exists: this is the cost it removed from every forwarded
request. Installs nginx from Debian if it is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import (
    JSON_BODY,
    Processes,
    ensure_tools,
    free_port,
    nginx_config,
    wait_http,
)

from scoped.config import Timeouts
from scoped.upstream import HttpUpstream

HEADERS = [("x-auth-token", "gAAAAABexampletoken"), ("x-openstack-request-id", "req-1")]
CONCURRENCY = 64


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(one: Callable[[], Awaitable[bytes]], n: int) -> tuple[float, float]:
    """(CPU µs per call, calls per second) for ``n`` calls, 64 in flight."""
    assert len(await one()) == len(JSON_BODY)  # warm: a connection, and the right answer
    per_worker = n // CONCURRENCY

    async def worker() -> None:
        for _ in range(per_worker):
            await one()

    c0, t0 = cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    done = per_worker * CONCURRENCY
    return (cpu() - c0) / done * 1e6, done / (time.perf_counter() - t0)


async def scoped_client(url: str, n: int) -> tuple[float, float]:
    up = HttpUpstream()
    timeouts = Timeouts(connect=5.0, total=30.0)

    async def one() -> bytes:
        reply = await up.send("GET", url, HEADERS, None, timeouts)
        return await reply.read(1 << 20)

    try:
        return await measure(one, n)
    finally:
        await up.close()


async def aiohttp_client(url: str, n: int) -> tuple[float, float]:
    import aiohttp  # noqa: PLC0415
    from yarl import URL  # noqa: PLC0415

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    target = URL(url, encoded=True)

    async def one() -> bytes:
        async with session.get(target, headers=HEADERS, allow_redirects=False) as resp:
            return await resp.read()

    try:
        return await measure(one, n)
    finally:
        await session.close()


async def aiosonic_client(url: str, n: int) -> tuple[float, float]:
    import aiosonic  # type: ignore[import-not-found]  # noqa: PLC0415

    client = aiosonic.HTTPClient()

    async def one() -> bytes:
        resp = await client.get(url, headers=dict(HEADERS))
        return bytes(await resp.content())

    return await measure(one, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40000)
    args = parser.parse_args()
    ensure_tools()
    os.sched_setaffinity(0, {1})
    procs = Processes()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="scoped-bench-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(nginx_config(Path(tmp), port))
        try:
            procs.start("nginx", "-c", str(conf), "-e", f"{tmp}/nginx.err", cpu="0")
            url = f"http://127.0.0.1:{port}/v2.1/servers"
            wait_http(url, procs)
            clients = {"scoped (httptools)": scoped_client, "aiohttp ClientSession": aiohttp_client}
            try:
                import aiosonic  # type: ignore[import-not-found]  # noqa: F401, PLC0415

                clients["aiosonic"] = aiosonic_client
            except ImportError:
                pass
            print(f"{CONCURRENCY} calls in flight, {args.requests} calls, client on CPU 1")
            print(f"{'client':24} {'CPU/call':>10} {'calls/s':>10}")
            for name, run in clients.items():
                us, rate = uvloop.run(run(url, args.requests))
                print(f"{name:24} {us:8.1f}us {rate:10.0f}", flush=True)
        finally:
            procs.stop()


if __name__ == "__main__":
    main()
