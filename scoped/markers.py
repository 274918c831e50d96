"""Where composite markers too long for a link are kept (the 1000-sites issue).

A composite marker says where every site of a fan-out stands (paging.py).
Inline it grows with the width: at 1000 sites, with an item id per site, it
is tens of kilobytes, past the 8 KB of a URL that common servers and proxies
accept. A marker longer than :data:`scoped.paging.INLINE_MAX` is therefore
kept in a store every gateway process and replica of the site can read
(memcached, which OpenStack deployments already run for Keystone and
oslo.cache), and the link carries only its key, ``sc1~`` and 32 characters.

The key is the marker's own digest (content-addressed): every process
computes the same key for the same marker, a value read back is checked
against it (a shared or tampered store cannot make a gateway page from
somewhere else), and keeping the same marker twice costs one write.

Without a store (``paging.memcached`` unset) markers stay inline, as long as
they are: stateless, but past a few hundred sites too long for many proxies.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Mapping
from typing import Protocol

from .errors import ScopedError

KEY_PREFIX = "scoped:marker:"
"""Namespace of the keys in a shared memcached."""


class StoreError(ScopedError):
    """The marker store could not be written or read."""


class MarkerStore(Protocol):
    """Keeps markers by key, for ``ttl`` seconds or until evicted."""

    description: str
    ttl: int

    async def put(self, items: Mapping[str, bytes]) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def close(self) -> None: ...


def marker_key(raw: bytes) -> str:
    """The key of a marker: 24 bytes of its BLAKE2b digest, base64url."""
    digest = hashlib.blake2b(raw, digest_size=24).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


class Pending:
    """The long markers one response names: kept (:meth:`MarkerStore.put`)
    before the response is sent, so a client never holds a link to a marker
    that is not there."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    def keep(self, raw: bytes) -> str:
        key = marker_key(raw)
        self.items[key] = raw
        return key


class MemoryStore:
    """A store in this process only: for tests and a single-process gateway
    that accepts losing its long links when it restarts. Bounded: the
    oldest entries go first past ``size``."""

    description = "this process's memory"

    def __init__(self, ttl: int = 86400, size: int = 10000) -> None:
        self.ttl = ttl
        self.size = size
        self._items: dict[str, tuple[float, bytes]] = {}

    async def put(self, items: Mapping[str, bytes]) -> None:
        now = asyncio.get_running_loop().time()
        for key, raw in items.items():
            self._items.pop(key, None)
            self._items[key] = (now + self.ttl, raw)
        while len(self._items) > self.size:
            del self._items[next(iter(self._items))]

    async def get(self, key: str) -> bytes | None:
        found = self._items.get(key)
        if found is None or found[0] < asyncio.get_running_loop().time():
            return None
        return found[1]

    async def close(self) -> None:
        self._items.clear()


class MemcachedStore:
    """Markers in memcached (pymemcache: the client oslo.cache uses), a key
    on one of ``servers`` by rendezvous hashing, as every process computes
    it. pymemcache blocks, so each call runs in a worker thread; only long
    markers come here, one write per page that needs one and one read per
    such link followed. A server that fails is an error every time (not
    pymemcache's HashClient, which after a failure answers "not found" for
    a while: a page would read as expired while memcached was only down)."""

    def __init__(self, servers: tuple[str, ...], ttl: int = 86400, timeout: float = 2.0) -> None:
        from pymemcache.client.base import PooledClient  # noqa: PLC0415 (only when configured)
        from pymemcache.client.rendezvous import RendezvousHash  # noqa: PLC0415

        self.ttl = ttl
        self.description = "memcached at " + ", ".join(servers)
        self._ring = RendezvousHash(list(servers))
        self._clients = {
            s: PooledClient(_hostport(s), connect_timeout=timeout, timeout=timeout) for s in servers
        }

    async def put(self, items: Mapping[str, bytes]) -> None:
        by_server: dict[str, dict[str, bytes]] = {}
        for key, raw in items.items():
            by_server.setdefault(self._ring.get_node(key), {})[KEY_PREFIX + key] = raw
        for server, named in by_server.items():
            client = self._clients[server]
            try:
                failed = await asyncio.to_thread(
                    client.set_many, named, expire=self.ttl, noreply=False
                )
            except Exception as err:  # pymemcache raises socket and protocol errors alike
                raise StoreError(f"memcached at {server}: {_reason(err)}") from None
            if failed:
                raise StoreError(
                    f"memcached at {server}: {len(failed)} of {len(named)} markers not stored"
                )

    async def get(self, key: str) -> bytes | None:
        server = self._ring.get_node(key)
        try:
            value = await asyncio.to_thread(self._clients[server].get, KEY_PREFIX + key)
        except Exception as err:  # as in put
            raise StoreError(f"memcached at {server}: {_reason(err)}") from None
        return value if isinstance(value, bytes) else None

    async def close(self) -> None:
        for client in self._clients.values():
            await asyncio.to_thread(client.close)


def _hostport(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
