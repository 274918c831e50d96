"""The callback fan-out (scoped.fanout) against real sites on loopback: a
read ``&`` on kept connections answers as the usual path does, and every
case it does not handle goes the usual way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from scoped.calls import SiteCaller
from scoped.config import parse_config
from scoped.fanout import _farthest_first
from scoped.gateway import Gateway
from scoped.http import Body, Request, Response
from scoped.plan import Call, First
from scoped.upstream import HttpUpstream

SITES = ["A", "B", "C"]


@dataclass
class Site:
    """A stand-in compute site: raw HTTP/1.1, keep-alive, one answer per request."""

    name: str
    status: int = 200
    ctype: str = "application/json"
    body: bytes = b""
    close_when_idle: bool = False
    """Close the connection after answering, without saying so (a site
    whose keep-alive ran out while the gateway kept the connection)."""
    silent: bool = False
    delay: float = 0.0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_unanswered: int = 0
    port: int = 0

    def servers(self, n: int = 2) -> None:
        items = [{"id": f"{self.name}-{i}", "name": f"vm-{self.name}-{i}"} for i in range(n)]
        self.body = orjson.dumps({"servers": items})

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                    return
                self.requests.append(head)
                if self.silent:
                    if await reader.read(1) == b"":
                        self.closed_unanswered += 1
                    return
                await asyncio.sleep(self.delay)
                writer.write(
                    f"HTTP/1.1 {self.status} X\r\ncontent-type: {self.ctype}\r\n"
                    f"content-length: {len(self.body)}\r\n\r\n".encode()
                    + self.body
                )
                await writer.drain()
                if self.close_when_idle:
                    return
        finally:
            writer.close()


Check = Callable[[Gateway, dict[str, Site]], Awaitable[None]]


def federation(check: Check, overrides: dict[str, Any] | None = None, slots: int = 1024) -> None:
    """Sites A, B, C on loopback, a gateway at A (in this loop), and ``check``."""

    async def main() -> None:
        sites = {name: Site(name) for name in SITES}
        servers = []
        for site in sites.values():
            site.servers()
            server = await asyncio.start_server(site.serve, "127.0.0.1", 0)
            site.port = server.sockets[0].getsockname()[1]
            servers.append(server)
        data: dict[str, Any] = {
            "site": "A",
            "backends": {"compute": f"http://127.0.0.1:{sites['A'].port}"},
            "sites": {
                name: {"endpoints": {"compute": f"http://127.0.0.1:{s.port}"}}
                for name, s in sites.items()
                if name != "A"
            },
            "retries": {"attempts": 1},
            "timeouts": {"connect": 1.0, "total": 2.0},
            **(overrides or {}),
        }
        data["sites"]["A"] = {}
        gw = Gateway(parse_config(data, "<test>"), HttpUpstream(max_concurrency=slots))
        try:
            await check(gw, sites)
        finally:
            await gw.close()
            for server in servers:
                server.close()

    asyncio.run(main())


async def get(gw: Gateway, scope: str = "<nova: A&B&C>") -> Response:
    headers = (("x-auth-token", "t"), ("x-scope", scope))
    req = Request("GET", "compute", "/v2.1/servers", "", headers, "http://gw/compute", Body())
    return await gw.handle(req)


def outcomes(resp: Response) -> str:
    """``X-Scope-Sites`` without its timings."""
    value = dict(resp.headers)["x-scope-sites"]
    return ", ".join(entry.split(";t=")[0] for entry in value.split(", "))


def without_request_id(head: bytes) -> list[bytes]:
    lines = head.split(b"\r\n")
    assert sum(line.startswith(b"x-openstack-request-id: ") for line in lines) == 1
    return [line for line in lines if not line.startswith(b"x-openstack-request-id: ")]


class CountedCalls:
    """Counts the usual path's site calls (SiteCaller.__call__), passing them on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        usual = SiteCaller.__call__

        async def counted(caller: SiteCaller, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await usual(caller, *args, **kwargs)

        monkeypatch.setattr(SiteCaller, "__call__", counted)


def test_a_second_read_goes_on_kept_connections_and_answers_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    usual = CountedCalls(monkeypatch)

    async def check(gw: Gateway, sites: dict[str, Site]) -> None:
        first = await get(gw)
        assert usual.count == 3  # new connections: the usual path
        second = await get(gw)
        assert usual.count == 3  # kept ones: none of the usual path
        assert first.status == second.status == 200
        assert first.body == second.body
        assert outcomes(first) == outcomes(second)
        names = [s["id"] for s in orjson.loads(second.body)["servers"]]  # type: ignore[arg-type]
        assert names == ["A-0", "A-1", "B-0", "B-1", "C-0", "C-1"]
        assert [s.connections for s in sites.values()] == [1, 1, 1]
        # The head sent on the kept connection is the usual path's (but
        # for the request's own ID).
        for site in sites.values():
            assert without_request_id(site.requests[0]) == without_request_id(site.requests[1])
        assert b"x-scoped-hop: A>B" in sites["B"].requests[1]
        assert b"x-scoped-hop" not in sites["A"].requests[1]

    federation(check)


def test_a_kept_connection_the_site_closed_is_sent_again_on_a_new_one() -> None:
    async def check(gw: Gateway, sites: dict[str, Site]) -> None:
        sites["B"].close_when_idle = True
        assert (await get(gw)).status == 200
        await asyncio.sleep(0.05)  # B's close reaches the gateway's kept connection
        resp = await get(gw)
        assert resp.status == 200, resp.body
        assert sites["B"].connections == 2 and len(sites["B"].requests) == 2
        assert sites["A"].connections == 1 and len(sites["A"].requests) == 2

    federation(check)


def test_a_failed_site_ends_the_read_at_once_and_closes_the_others() -> None:
    async def check(gw: Gateway, sites: dict[str, Site]) -> None:
        assert (await get(gw)).status == 200
        sites["C"].silent = True
        sites["B"].status = 500
        resp = await get(gw)
        assert resp.status == 502
        error = orjson.loads(resp.body)["error"]  # type: ignore[arg-type]
        assert "B" in error["message"]
        await asyncio.sleep(0.05)
        # C's answer was not waited for: its connection was closed under it.
        assert sites["C"].closed_unanswered == 1

    federation(check)


def test_a_silent_site_on_a_kept_connection_times_out_as_usual() -> None:
    async def check(gw: Gateway, sites: dict[str, Site]) -> None:
        assert (await get(gw)).status == 200
        sites["C"].silent = True
        resp = await get(gw, "<nova: A&B&C?>")
        assert resp.status == 200
        assert "C=timeout" in outcomes(resp)
        assert len(orjson.loads(resp.body)["servers"]) == 4  # type: ignore[arg-type]

    federation(check, {"timeouts": {"connect": 0.2, "total": 0.4}})


def test_failures_on_kept_connections_open_the_circuit() -> None:
    async def check(gw: Gateway, sites: dict[str, Site]) -> None:
        assert (await get(gw)).status == 200
        sites["B"].status = 503
        seen = [outcomes(await get(gw, "<nova: A&B?&C>")) for _ in range(3)]
        assert seen == ["A=200, B=503, C=200", "A=200, B=503, C=200", "A=200, B=skipped, C=200"]

    federation(check, {"circuit": {"failures": 2, "cooldown": 60.0}})


@pytest.mark.parametrize("kind", ["large", "text", "error"])
def test_answers_it_does_not_read_whole_go_the_usual_way(kind: str) -> None:
    async def check(gw: Gateway, sites: dict[str, Site]) -> None:
        first = await get(gw)
        if kind == "large":  # over the reader's high-water mark: reading pauses
            sites["B"].servers(6000)
        elif kind == "text":
            sites["B"].ctype = "text/plain"
        else:
            sites["B"].status = 404
            sites["B"].body = b'{"itemNotFound": {"message": "no", "code": 404}}'
        usual = await get(gw, "<nova: A&B&C>")  # kept connections
        for site in sites.values():
            site.close_when_idle = True  # and again on new ones
        await get(gw, "<nova: A>")
        again = await get(gw, "<nova: A&B&C>")
        assert (usual.status, usual.body, outcomes(usual)) == (
            again.status,
            again.body,
            outcomes(again),
        )
        assert first.status == 200
        if kind == "large":
            assert usual.status == 200
            assert len(orjson.loads(usual.body)["servers"]) == 6004  # type: ignore[arg-type]

    federation(check)


def test_a_cancelled_read_gives_back_every_slot_and_closes_its_calls() -> None:
    async def check(gw: Gateway, sites: dict[str, Site]) -> None:
        assert (await get(gw)).status == 200
        for site in sites.values():
            site.silent = True
        task = asyncio.ensure_future(get(gw))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert [s.closed_unanswered for s in sites.values()] == [1, 1, 1]
        for site in sites.values():
            site.silent = False
        # Every slot came back: as many calls as the gate holds still go.
        resp = await get(gw)
        assert resp.status == 200

    federation(check, slots=3)


def test_the_sites_known_to_be_slowest_are_sent_to_first() -> None:
    async def check(gw: Gateway, sites: dict[str, Site]) -> None:
        sites["B"].delay = 0.2
        sites["C"].delay = 0.05
        assert (await get(gw)).status == 200
        latency = gw.executor.call_site.latency
        assert latency["B"] > latency["C"] > latency["A"]
        assert latency["B"] < 1000  # the site's own time, in ms
        children = [Call("A"), Call("B"), Call("C")]
        assert _farthest_first(children, latency) == [1, 2, 0]

    federation(check)


def test_equal_or_unknown_times_keep_plan_order() -> None:
    children = [Call("A"), First((Call("B"), Call("C"))), Call("D"), Call("E")]
    assert _farthest_first(children, {}) == [0, 1, 2, 3]
    assert _farthest_first(children, {"A": 5.0, "D": 5.0, "E": 9.0}) == [3, 0, 2, 1]
