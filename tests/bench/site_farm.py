"""Many stand-in compute sites in one process: one listening port per site
(each site its own origin, as in a real federation), each answering a Nova
server list after its own delay, sorted and paged by ``limit``/``marker``.

    python site_farm.py PORTS_FILE SPEC

SPEC is a comma-separated list of ``KIND:DELAY_MS`` per site: ``ok:20``
answers after 20 ms, ``silent:0`` accepts and never answers. A site the
benchmark wants refused gets no listener at all (the port stays closed).
Writes the listening ports, one per line, to PORTS_FILE once all listen.

Any method and path gets the list (HEAD its head only); ``limit`` and
``marker`` in the query page it, with a ``servers_links`` next href built
from the request's Host header: the aiohttp farm's answers byte for byte,
less its Date and Server headers. Those on a connection leave in the order
of the requests (pipelined ones too). A request refused (the parser's, or
aiohttp's Host checks) gets a 400 with ``Connection: close``, after the
answers before it, and the connection closed.

Lean, because the farm stands in for N independent hosts: the CPU it
spends is an artefact of the benchmark, and it answers a fan-out's N
requests one after another on the one core it is pinned to. On aiohttp it
cost ~90 µs of CPU an answer, 88 ms per ``*`` over 1000 sites, more than
the gateway under test (53-60 ms), and the ``*``'s p50 waited on the farm.
Here no request, response, task or coroutine object per request: an
asyncio protocol per connection feeding httptools (llhttp, as the gateway
does) on uvloop; each site's whole-list answer (head and body) rendered
once, only paged answers computed per request; the delay one loop timer
per millisecond shared by every answer falling in it (:class:`Timers`;
~2 µs less an answer than a ``loop.call_later`` each), a connection's
answers waiting their turn in a deque. ``bench_scale.py --sites 1000
--requests 20 --quick``, the two alternately: the farm's CPU per ``*``
88-89 -> 16 ms, the p50 151-173 -> 69-73 ms (``--sites 200``: 16-19 -> 3-4
ms, p50 49-53 -> 31-34 ms). Of the ~16 µs an answer, ~7 µs is the
kernel's, loopback TCP both ways.
"""

from __future__ import annotations

import asyncio
import functools
import math
import resource
import sys
from collections import deque
from pathlib import Path
from urllib.parse import parse_qsl

import httptools
import orjson
import uvloop

ITEMS = 5

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
SERVER_ERROR = b"500 Internal Server Error\n\nServer got itself in trouble"  # aiohttp's


class Site:
    """One site's servers and its answers to a whole list, rendered once."""

    def __init__(self, index: int, delay_ms: float) -> None:
        self.delay_ms = delay_ms
        servers = [
            {"id": f"{index:05d}-{i:02d}", "name": f"vm-{index:05d}-{i:02d}"} for i in range(ITEMS)
        ]
        self.servers = sorted(servers, key=lambda s: s["name"])
        self.body = orjson.dumps({"servers": self.servers})
        self.whole = rendered("1.1", 200, JSON, self.body, keep_alive=True)
        self.whole_head = rendered("1.1", 200, JSON, self.body, keep_alive=True, head_only=True)

    def paged(self, target: bytes, host: str) -> tuple[int, bytes] | None:
        """The (status, body) of the list paged by the query of ``target``;
        None when the query has neither ``limit`` nor ``marker``."""
        query = target.partition(b"?")[2].partition(b"#")[0].decode("latin-1")
        params: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(name, value)  # the first, as aiohttp's request.query
        marker, limit = params.get("marker"), params.get("limit")
        if marker is None and limit is None:
            return None
        try:
            items = self.servers
            if marker is not None:
                ids = [s["id"] for s in items]
                items = items[ids.index(marker) + 1 :] if marker in ids else []
            body: dict[str, object] = {"servers": items}
            if limit is not None and len(items) > int(limit):
                body["servers"] = items[: int(limit)]
                last = items[int(limit) - 1]["id"]
                href = f"http://{host}/v2.1/servers?limit={limit}&marker={last}"
                body["servers_links"] = [{"rel": "next", "href": href}]
            return 200, orjson.dumps(body)
        except (ValueError, IndexError, orjson.JSONEncodeError):
            return 500, SERVER_ERROR  # as the aiohttp app's exception did


REASONS = {200: b"OK", 400: b"Bad Request", 500: b"Internal Server Error"}


def rendered(
    version: str,
    status: int,
    content_type: bytes,
    body: bytes,
    keep_alive: bool,
    head_only: bool = False,
) -> bytes:
    """An answer, head and body, as aiohttp framed it (less Date and Server)."""
    if version == "1.0":
        connection = b"Connection: keep-alive\r\n" if keep_alive else b""
    else:
        connection = b"" if keep_alive else b"Connection: close\r\n"
    head = b"HTTP/%b %d %b\r\nContent-Type: %b\r\nContent-Length: %d\r\n%b\r\n" % (
        version.encode(),
        status,
        REASONS[status],
        content_type,
        len(body),
        connection,
    )
    return head if head_only else head + body


def bad_request(reason: str) -> bytes:
    """A 400 that closes the connection."""
    return rendered("1.1", 400, TEXT, reason.encode("utf-8", "replace"), keep_alive=False)


class Timers:
    """The farm's answer timers, grouped by the millisecond they fall in:
    one loop timer (``loop.call_at``) per millisecond, not one per request
    (a fan-out's requests come within a few). libuv counts whole
    milliseconds anyway, and uvloop's ``loop.time()`` is libuv's clock, read
    when the loop last woke: a request's bytes had come by then."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buckets: dict[int, list[Answering]] = {}

    def add(self, delay_ms: float, conn: Answering) -> None:
        """``conn.send()`` once ``delay_ms`` have passed."""
        key = math.ceil(self.loop.time() * 1000 + delay_ms - 1e-6)  # 1e-6: float noise
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = []
            self.loop.call_at(key / 1000, self.fire, key)
        bucket.append(conn)

    def fire(self, key: int) -> None:
        for conn in self.buckets.pop(key):
            conn.send()


class Answering(asyncio.Protocol):
    """A connection to an ``ok`` site: each request answered after the
    site's delay, in the order the requests came."""

    __slots__ = (
        "host",
        "hosts",
        "last",
        "parser",
        "site",
        "target",
        "timers",
        "transport",
        "waiting",
    )

    def __init__(self, site: Site, timers: Timers) -> None:
        self.site = site
        self.timers = timers
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.target = b""
        self.host = b""
        self.hosts = 0
        self.waiting: deque[bytes] = deque()
        """Answers whose timers have not fired yet, oldest first: each timer
        writes the oldest (one delay per site: they fire in this order)."""
        self.last: bytes | None = None
        """Once set, nothing more is read: written after the answers
        waiting (b"": nothing), then the connection is closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.last is not None:
            return  # after a request that ends the connection: read, ignored
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # answered as any request; the other protocol's bytes ignored
        except httptools.HttpParserError as err:
            self.close_after(bad_request(str(err)))

    def eof_received(self) -> bool | None:
        if not self.waiting:
            return None  # closes the connection
        self.close_after(b"")  # once the answers still to come have left
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.waiting.clear()  # the timers still to fire write nothing

    # -- httptools callbacks -----------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.target += url  # llhttp may hand a long target over in parts

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 4 and name.lower() == b"host":
            self.hosts += 1
            self.host = value

    def on_message_complete(self) -> None:
        target, host, hosts = self.target, self.host, self.hosts
        self.target, self.host, self.hosts = b"", b"", 0
        if self.last is not None:
            return  # after a request that ends the connection
        parser = self.parser
        version = parser.get_http_version()
        if hosts != 1 and (hosts or version != "1.0"):  # refused, as aiohttp did
            duplicate = "Duplicate 'Host' header found."
            self.close_after(
                bad_request(duplicate if hosts else "Missing 'Host' header in request.")
            )
            return
        site = self.site
        keep_alive = parser.should_keep_alive()
        head_only = parser.get_method() == b"HEAD"
        paged = None
        if b"?" in target:
            if hosts:
                where = host.decode("utf-8", "surrogateescape")
            else:  # HTTP/1.0 without a Host: the address it reached, as aiohttp
                assert self.transport is not None
                where = self.transport.get_extra_info("sockname")[0]
            paged = site.paged(target, where)
        if paged is not None:
            status, body = paged
            keep_alive = keep_alive and status == 200  # aiohttp closed after a 500 too
            content_type = JSON if status == 200 else TEXT
            answer = rendered(version, status, content_type, body, keep_alive, head_only)
        elif keep_alive and version == "1.1":
            answer = site.whole_head if head_only else site.whole
        else:
            answer = rendered(version, 200, JSON, site.body, keep_alive, head_only)
        self.waiting.append(answer)
        self.timers.add(site.delay_ms, self)
        if not keep_alive:
            self.close_after(b"")

    # -- answering ---------------------------------------------------------

    def send(self) -> None:
        """A timer fired: the oldest answer waiting leaves."""
        transport = self.transport
        if transport is None or not self.waiting:
            return  # the connection is gone
        transport.write(self.waiting.popleft())
        if not self.waiting and self.last is not None:
            self.finish(transport, self.last)

    def close_after(self, last: bytes) -> None:
        """Read no more; write ``last`` after the answers waiting, then close."""
        if self.last is not None:
            return
        self.last = last
        if not self.waiting and self.transport is not None:
            self.finish(self.transport, last)

    def finish(self, transport: asyncio.Transport, last: bytes) -> None:
        if last:
            transport.write(last)
        transport.close()
        self.transport = None


class Silent(asyncio.Protocol):
    """A connection to a ``silent`` site: read, never answered."""

    def data_received(self, data: bytes) -> None:
        pass


async def serve(ports_file: Path, spec: list[tuple[str, float]]) -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    servers = []
    ports = []
    for index, (kind, delay_ms) in enumerate(spec):
        site = Site(index, delay_ms)
        if kind == "silent":
            server = await loop.create_server(Silent, "127.0.0.1", 0, backlog=128)
        else:
            server = await loop.create_server(
                functools.partial(Answering, site, timers), "127.0.0.1", 0, backlog=128
            )
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    ports_file.write_text("\n".join(map(str, ports)) + "\n")
    await asyncio.Event().wait()


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ports_file = Path(sys.argv[1])
    spec = []
    for part in sys.argv[2].split(","):
        kind, delay = part.split(":")
        spec.append((kind, float(delay)))
    uvloop.install()
    asyncio.run(serve(ports_file, spec))


if __name__ == "__main__":
    main()
