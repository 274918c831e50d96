"""The marker store on a real memcached (Debian's, on loopback): a long
paging link made by one gateway process is followed at another (a restart,
a replica), and a memcached that is down is a clear error, not a lost page."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from scoped.markers import MemcachedStore, StoreError, marker_key
from tests.memcached import memcached
from tests.scoped.test_markers import SITES, gateway, get, servers_of


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with memcached() as where:
        yield where


def test_a_marker_is_kept_and_read_back(server: str) -> None:
    raw = b'{"S1": "' + b"x" * 60000 + b'"}'  # a 1000-site marker's size
    key = marker_key(raw)

    async def main() -> tuple[bytes | None, bytes | None]:
        store = MemcachedStore((server,), ttl=60)
        try:
            await store.put({key: raw})
            return await store.get(key), await store.get(marker_key(b"never kept"))
        finally:
            await store.close()

    assert asyncio.run(main()) == (raw, None)


def test_a_link_made_by_one_process_is_followed_at_another(server: str) -> None:
    """Never lost when a process restarts: every page is served by a new
    gateway (a restart, another worker or replica) configured with
    ``paging.memcached``, and the links it follows were made by another."""
    rng = random.Random(7)
    data = {s: servers_of(s, rng) for s in SITES[:300]}
    query = "limit=100&sort_key=name&sort_dir=asc"
    seen: list[str] = []
    for _ in range(20):
        gw = gateway(data, None, paging={"memcached": [server], "ttl": 60})
        resp = get(gw, query)
        asyncio.run(gw.close())
        assert resp.status == 200, resp.body
        body: dict[str, Any] = orjson.loads(resp.body)  # type: ignore[arg-type]
        seen += [s["id"] for s in body["servers"]]
        links = [x["href"] for x in body.get("servers_links", [])]
        if not links:
            break
        assert "marker=sc1~" in links[0] and len(links[0]) < 200
        query = links[0].split("?", 1)[1]
    assert sorted(seen) == sorted(i["id"] for items in data.values() for i in items)
    assert len(seen) == len(set(seen))


def test_a_memcached_that_is_down_is_a_clear_error() -> None:
    with memcached() as where:
        pass  # started and stopped: nothing listens there now
    store = MemcachedStore((where,), ttl=60, timeout=0.5)

    async def main() -> list[str]:
        errors = []
        for call in (store.put({"k": b"v"}), store.get("k")):
            with pytest.raises(StoreError) as err:
                await call
            errors.append(str(err.value))
        await store.close()
        return errors

    for error in asyncio.run(main()):
        assert error.startswith(f"memcached at {where}: ")
