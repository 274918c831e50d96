"""The core's own cost per request, in process: the ASGI app and the core
over an in-memory upstream, no sockets, no server.

Prints microseconds of CPU per request (median of rounds) for a request
forwarded to one site, and for a ``&`` over three sites merged; then, per
site, merging a ``*`` list over 1000 sites (scoped/merge.py alone: decode
each site's answer, combine, render), in site order and sorted by 50. This is
the part of the gateway's cost that scoped's own code decides;
bench_gateway.py measures it with the server and the wire. Self-contained (its own in-memory
site), so the same script measures an older checkout:

    .venv/bin/python tests/bench/bench_core.py
    PYTHONPATH=OLD:OLD/grammar:OLD/middleware .venv/bin/python tests/bench/bench_core.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import orjson
from scoped_middleware.asgi import GatewayApp

from scoped.config import parse_config
from scoped.gateway import Gateway
from scoped.http import Body, Request
from scoped.merge import combine, decode_collection, render
from scoped.paging import listing_of

SERVERS = orjson.dumps({"servers": [{"id": f"id-{i}", "name": f"vm{i}"} for i in range(10)]})


class Reply:
    __slots__ = ("body", "headers", "status")

    def __init__(self) -> None:
        self.status = 200
        self.headers = [("content-type", "application/json"), ("content-length", str(len(SERVERS)))]
        self.body = SERVERS

    async def read(self, limit: int) -> bytes:
        return self.body

    async def stream(self) -> AsyncIterator[bytes]:
        yield self.body

    def release(self) -> None:
        pass


class Upstream:
    async def send(self, method: str, url: str, headers: Any, body: Any, timeouts: Any) -> Reply:
        return Reply()

    async def close(self) -> None:
        pass


CONFIG = {
    "site": "Berlin",
    "sites": {
        "Berlin": {},
        "Denver": {"endpoints": {"compute": "http://denver.test/compute"}},
        "Paris": {"endpoints": {"compute": "http://paris.test/compute"}},
    },
    "backends": {"compute": "http://berlin.test/compute"},
}


def scope_of(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/compute/v2.1/servers",
        "raw_path": b"/compute/v2.1/servers",
        "query_string": b"",
        "headers": [(b"host", b"gw.test"), (b"x-auth-token", b"tok"), *headers],
        "scheme": "http",
        "server": ("127.0.0.1", 8001),
    }


async def measure(app: GatewayApp, scope: dict[str, Any], n: int) -> float:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    for _ in range(200):  # warm caches (parse, plan)
        await app(scope, receive, send)
    sent.clear()
    start = time.process_time()
    for _ in range(n):
        await app(scope, receive, send)
    elapsed = time.process_time() - start
    assert sent[0]["status"] == 200, sent[0]
    return elapsed / n * 1e6


def site_body(index: int) -> bytes:
    """A site's answer as tests/bench/site_farm.py gives it: 5 servers."""
    items = [{"id": f"{index:05d}-{i:02d}", "name": f"vm-{index:05d}-{i:02d}"} for i in range(5)]
    return orjson.dumps({"servers": items})


def measure_merge(query: str, sites: int, n: int) -> float:
    """CPU µs per site of merging ``sites`` answers to a list with ``query``."""
    bodies = [(f"S{i}", site_body(i)) for i in range(sites)]
    listing = listing_of("compute", query)

    def once() -> bytes:
        parts = [decode_collection(site, body) for site, body in bodies]
        coll = combine(listing, parts)  # type: ignore[arg-type]
        return render(
            coll,
            listing,
            service="compute",
            entry_url="http://gw.test/compute",
            path="/v2.1/servers",
            query=query,
        )

    once()
    start = time.process_time()
    for _ in range(n):
        once()
    return (time.process_time() - start) / n / sites * 1e6


DENVER = "http://denver.test/compute"


def nova_body(index: int) -> bytes:
    """A page of 5 servers as Nova answers it: each with its ``self`` and
    ``bookmark`` links, to the address the gateway called."""
    items = []
    for i in range(5):
        sid = f"3f2a{index:05d}-7c1e-4d2b-9a51-0e6c2b7d{i:04d}"
        links = [
            {"rel": "self", "href": f"{DENVER}/v2.1/servers/{sid}"},
            {"rel": "bookmark", "href": f"{DENVER}/servers/{sid}"},
        ]
        items.append({"id": sid, "links": links, "name": f"vm-{index:05d}-{i:02d}"})
    return orjson.dumps({"servers": items})


class Head:
    status = 200
    headers: ClassVar[list[tuple[str, str]]] = [("content-type", "application/json")]


def measure_pages(gateway: Gateway, sites: int, n: int) -> float:
    """CPU µs per site of making ``sites`` Nova pages with links ready for
    the merge (scoped.calls.SiteCaller.whole_answer: links pointed back at
    the gateway), merging and rendering them."""
    caller = gateway.executor.call_site
    bodies = [nova_body(i) for i in range(sites)]
    headers = (("x-auth-token", "tok"),)
    req = Request("GET", "compute", "/v2.1/servers", "", headers, "http://gw.test/compute", Body())
    listing = listing_of("compute", "")

    def once() -> bytes:
        parts = []
        for body in bodies:
            answer = caller.whole_answer("Denver", req, DENVER, Head, [body], 0.0, True)
            coll = answer.collection or decode_collection("Denver", answer.body or b"")
            parts.append(coll)
        merged = combine(listing, parts)  # type: ignore[arg-type]
        out = render(
            merged,
            listing,
            service="compute",
            entry_url="http://gw.test/compute",
            path="/v2.1/servers",
            query="",
        )
        assert DENVER.encode() not in out
        return out

    once()
    start = time.process_time()
    for _ in range(n):
        once()
    return (time.process_time() - start) / n / sites * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    gateway = Gateway(parse_config(CONFIG, "<bench>"), Upstream())  # type: ignore[arg-type]
    app = GatewayApp(gateway)
    cases = {
        "one site (<nova: Denver>)": scope_of([(b"x-scope", b"<nova: Denver>")]),
        "& of 3, merged (<nova: Berlin&Denver&Paris>)": scope_of(
            [(b"x-scope", b"<nova: Berlin&Denver&Paris>")]
        ),
    }
    for name, scope in cases.items():
        rounds = [asyncio.run(measure(app, scope, args.requests)) for _ in range(args.rounds)]
        print(
            f"{name:48s} {statistics.median(rounds):6.1f} µs/request "
            f"(min {min(rounds):.1f}, max {max(rounds):.1f}, {args.rounds} rounds "
            f"of {args.requests})"
        )
    merges = {
        "* list over 1000 sites, merged in site order": "",
        "* list over 1000 sites, limit=50 sorted by name": "limit=50&sort_key=name&sort_dir=asc",
    }
    for name, query in merges.items():
        rounds = [measure_merge(query, 1000, 20) for _ in range(args.rounds)]
        print(
            f"{name:48s} {statistics.median(rounds):6.2f} µs/site "
            f"(min {min(rounds):.2f}, max {max(rounds):.2f}, {args.rounds} rounds of 20)"
        )
    rounds = [measure_pages(gateway, 1000, 20) for _ in range(args.rounds)]
    name = "* over 1000 sites, Nova's item links, merged"
    print(
        f"{name:48s} {statistics.median(rounds):6.2f} µs/site "
        f"(min {min(rounds):.2f}, max {max(rounds):.2f}, {args.rounds} rounds of 20)"
    )


if __name__ == "__main__":
    main()
