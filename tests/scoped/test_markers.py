"""Paging links of bounded size at any width (the 1000-sites issue, item 3):
a composite marker too long for a link is kept in the marker store, and the
link carries its key. Through the core's in-memory seam, with the in-memory
store (scoped/markers.py MemoryStore); memcached itself: test_memcached.py."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from scoped.config import parse_config
from scoped.gateway import Gateway
from scoped.http import Body, Request, Response
from scoped.markers import MarkerStore, MemoryStore, StoreError, marker_key
from scoped.memory import Exchange, MemoryReply, MemoryUpstream, json_reply
from scoped.paging import INLINE_MAX, STORED_PREFIX

N = 1000
PER_SITE = 5
SITES = [f"S{i}" for i in range(N)]
LINK_MAX = 8192
"""What common servers and proxies accept of a request line."""


def origin(site: str) -> str:
    return f"http://{site.lower()}.test"


def servers_of(site: str, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {"id": str(uuid.UUID(int=rng.getrandbits(128))), "name": f"vm-{rng.random():.6f}"}
        for _ in range(PER_SITE)
    ]


def nova(items: list[dict[str, Any]]) -> Callable[[Exchange], Awaitable[MemoryReply]]:
    """A site answering nova's paging: sorted by name, ``marker`` the last
    id seen, a next link when there is more."""
    ordered = sorted(items, key=lambda i: i["name"])

    async def handler(ex: Exchange) -> MemoryReply:
        query = dict(parse_qsl(urlsplit(ex.url).query))
        start = 0
        if "marker" in query:
            ids = [i["id"] for i in ordered]
            if query["marker"] not in ids:
                return json_reply(400, {"badRequest": {"message": "marker not found"}})
            start = ids.index(query["marker"]) + 1
        limit = int(query.get("limit", 1000))
        page = ordered[start : start + limit]
        body: dict[str, Any] = {"servers": page}
        if start + limit < len(ordered):
            body["servers_links"] = [{"rel": "next", "href": f"{ex.url}&marker={page[-1]['id']}"}]
        return json_reply(200, body)

    return handler


def gateway(
    data: Mapping[str, list[dict[str, Any]]],
    store: MarkerStore | None,
    **more: Any,
) -> Gateway:
    """A gateway at S0 in front of ``data``'s sites; ``more``: config keys."""
    config: dict[str, Any] = {
        **more,
        "site": SITES[0],
        "backends": {"compute": f"{origin(SITES[0])}/compute"},
        "sites": {s: {"endpoints": {"compute": f"{origin(s)}/compute"}} for s in data},
        "limits": {"max_fanout": 2000},
        "retries": {"attempts": 1},
    }
    config["sites"][SITES[0]] = {}
    upstream = MemoryUpstream({origin(s): nova(items) for s, items in data.items()})
    return Gateway(parse_config(config, "<test>"), upstream, store)


def get(gw: Gateway, query: str) -> Response:
    headers = (("x-auth-token", "t"), ("x-scope", "<compute: *>"))
    req = Request("GET", "compute", "/v2.1/servers", query, headers, "http://gw/compute", Body())
    return asyncio.run(gw.handle(req))


def page_through(gw: Gateway, limit: int) -> tuple[list[str], list[str]]:
    """Every id, in page order, and every next link followed."""
    seen: list[str] = []
    links: list[str] = []
    query = f"limit={limit}&sort_key=name&sort_dir=asc"
    for _ in range(N * PER_SITE // limit + 2):
        resp = get(gw, query)
        assert resp.status == 200, resp.body
        body = orjson.loads(resp.body)  # type: ignore[arg-type]
        seen += [s["id"] for s in body["servers"]]
        nxt = [link["href"] for link in body.get("servers_links", []) if link["rel"] == "next"]
        if not nxt:
            return seen, links
        links.append(nxt[0])
        query = urlsplit(nxt[0]).query
    raise AssertionError("paging did not end")


@pytest.fixture(scope="module")
def federation() -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(15)
    return {s: servers_of(s, rng) for s in SITES}


def test_at_1000_sites_every_item_appears_once_and_every_link_is_short(
    federation: dict[str, list[dict[str, Any]]],
) -> None:
    store = MemoryStore()
    seen, links = page_through(gateway(federation, store), limit=250)
    everything = [i["id"] for items in federation.values() for i in items]
    assert sorted(seen) == sorted(everything)
    assert len(seen) == len(set(seen)) == N * PER_SITE
    assert len(links) == N * PER_SITE // 250 - 1
    assert max(len(link) for link in links) < 200  # ~100 characters, at any width
    assert all(f"marker={STORED_PREFIX}" in link for link in links[1:])
    assert len(store._items) == len(links) - sum(STORED_PREFIX not in x for x in links)


def test_without_a_store_a_wide_marker_stays_in_the_link(
    federation: dict[str, list[dict[str, Any]]],
) -> None:
    """Stateless: the same items, but the links grow with the width."""
    few = dict(list(federation.items())[:200])
    seen, links = page_through(gateway(few, None), limit=50)
    assert sorted(seen) == sorted(i["id"] for items in few.values() for i in items)
    assert all(STORED_PREFIX not in link for link in links)
    assert max(len(link) for link in links) > LINK_MAX  # why a store is worth having


def test_a_narrow_fan_out_keeps_its_marker_inline_even_with_a_store(
    federation: dict[str, list[dict[str, Any]]],
) -> None:
    few = dict(list(federation.items())[:4])
    store = MemoryStore()
    seen, links = page_through(gateway(few, store), limit=3)
    assert len(seen) == len(set(seen)) == 4 * PER_SITE
    assert links and all(len(link) < INLINE_MAX + 200 for link in links)
    assert all(STORED_PREFIX not in link for link in links)
    assert store._items == {}


class Broken:
    """A store that cannot be reached (memcached down)."""

    description = "memcached at 127.0.0.1:1"
    ttl = 60

    async def put(self, items: Mapping[str, bytes]) -> None:
        raise StoreError(f"{self.description}: ConnectionRefusedError")

    async def get(self, key: str) -> bytes | None:
        raise StoreError(f"{self.description}: ConnectionRefusedError")

    async def close(self) -> None:
        pass


def test_a_store_that_cannot_keep_a_marker_leaves_it_inline(
    federation: dict[str, list[dict[str, Any]]],
) -> None:
    few = dict(list(federation.items())[:100])
    gw = gateway(few, Broken())
    resp = get(gw, "limit=50&sort_key=name&sort_dir=asc")
    assert resp.status == 200
    [link] = orjson.loads(resp.body)["servers_links"]  # type: ignore[arg-type]
    assert f"marker={STORED_PREFIX}" not in link["href"]
    assert "marker=sc1." in link["href"]
    resp = get(gw, f"limit=50&marker={STORED_PREFIX}{'A' * 32}")
    assert resp.status == 503
    assert "could not be read (memcached at 127.0.0.1:1: ConnectionRefusedError)" in str(resp.body)


@pytest.mark.parametrize(
    ("marker", "store", "status", "says"),
    [
        (STORED_PREFIX + "A" * 32, None, 400, "this gateway has none: expected paging.memcached"),
        (STORED_PREFIX + "A" * 32, MemoryStore(ttl=60), 400, "this paging link has expired"),
        (STORED_PREFIX + "short", MemoryStore(), 400, "not one this gateway made"),
    ],
)
def test_a_stored_marker_that_cannot_be_used_says_why(
    marker: str, store: MarkerStore | None, status: int, says: str
) -> None:
    gw = gateway({SITES[0]: [], SITES[1]: []}, store)
    resp = get(gw, f"limit=5&marker={marker}")
    assert resp.status == status
    assert says in orjson.loads(resp.body)["error"]["message"]  # type: ignore[arg-type]


def test_a_value_that_is_not_the_keys_marker_is_refused() -> None:
    """Content-addressed: a store holding something else under a key (shared,
    tampered) cannot make the gateway page from elsewhere."""
    store = MemoryStore()
    key = marker_key(b'{"S1": null}')
    asyncio.run(store.put({key: b'{"S1": true}'}))
    resp = get(gateway({SITES[0]: [], SITES[1]: []}, store), f"marker={STORED_PREFIX}{key}")
    assert resp.status == 400
    assert "not one this gateway made" in str(resp.body)


def test_the_memory_store_forgets_past_its_size_and_ttl() -> None:
    async def main() -> list[bytes | None]:
        store = MemoryStore(ttl=60, size=2)
        await store.put({"a": b"1", "b": b"2", "c": b"3"})
        expired = MemoryStore(ttl=1)
        await expired.put({"x": b"9"})
        expired._items["x"] = (0.0, b"9")  # as if its ttl had passed
        return [await store.get(k) for k in "abc"] + [await expired.get("x")]

    assert asyncio.run(main()) == [None, b"2", b"3", None]
