"""The floor under the gateway's CPU per site call: the same exchanges with
nothing else. One kept-alive connection per site; each round writes one GET
on every connection, parses the answers with httptools, decodes each body
with orjson, joins the lists and encodes the result: what any Python
fan-out on uvloop must do, with no policy, header, report or paging work.

    python bare_fanout.py ROUNDS PORTS_FILE

Prints the median time of a round (all the answers in, merged) and the CPU
of this process's thread per site call (median and least of the rounds).
tests/bench/bench_scale.py runs it pinned to the gateway's CPU, against the
same site farm.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httptools
import orjson
import uvloop

HEADERS = (
    "accept: application/json\r\n"
    f"x-auth-token: {'t' * 180}\r\n"  # about a Fernet token's size
    "x-openstack-request-id: req-00000000-0000-0000-0000-000000000000\r\n"
)


class Exchange(asyncio.Protocol):
    """One connection: its answers' bodies, each handed to ``done`` whole."""

    def __init__(self, done: Callable[[bytes], None]) -> None:
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.chunks)
        self.chunks = []
        self.done(body)


async def rounds(ports: list[int], n: int) -> tuple[list[float], list[float]]:
    """CPU seconds and wall seconds of each of ``n`` rounds."""
    loop = asyncio.get_running_loop()
    bodies: list[bytes] = []
    waiter: asyncio.Future[None] = loop.create_future()

    def done(body: bytes) -> None:
        bodies.append(body)
        if len(bodies) == len(ports) and not waiter.done():
            waiter.set_result(None)

    conns = []
    for port in ports:
        _, conn = await loop.create_connection(lambda: Exchange(done), "127.0.0.1", port)
        text = f"GET /v2.1/servers HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{HEADERS}\r\n"
        conns.append((conn, text.encode()))
    cpu, wall = [], []
    for _ in range(n + 1):  # the first round is not counted
        bodies.clear()
        waiter = loop.create_future()
        began = time.perf_counter()
        start = time.thread_time()
        for conn, head in conns:
            assert conn.transport is not None
            conn.transport.write(head)
        await asyncio.wait_for(waiter, 30)
        items = []
        for body in bodies:
            items.extend(orjson.loads(body)["servers"])
        orjson.dumps({"servers": items})
        cpu.append(time.thread_time() - start)
        wall.append(time.perf_counter() - began)
    for conn, _ in conns:
        assert conn.transport is not None
        conn.transport.close()
    return cpu[1:], wall[1:]


def main() -> None:
    n = int(sys.argv[1])
    ports = [int(p) for p in Path(sys.argv[2]).read_text().split()]
    uvloop.install()
    cpu, wall = asyncio.run(rounds(ports, n))
    per = [c / len(ports) * 1e6 for c in cpu]
    print(
        f"  a bare fan-out (no gateway: uvloop, httptools, orjson) over {len(ports)} sites: "
        f"p50 {statistics.median(wall) * 1e3:.1f} ms, CPU per site call "
        f"{statistics.median(per):.0f} us (least of {n}: {min(per):.0f} us)"
    )


if __name__ == "__main__":
    main()
