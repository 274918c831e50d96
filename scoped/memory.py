"""An in-memory :class:`~scoped.upstream.Upstream`: sites as async handlers,
no sockets.

What httpx's ``MockTransport`` is to httpx: the core's own tests of merge,
paging, failover and verdicts run through the very seam the HTTP client
plugs into, fast and deterministic; the wire tests keep the wire behaviour.
A handler answers with a :class:`MemoryReply`, or raises one of the
:class:`~scoped.errors.Failure` classes to play a site that refuses, resets
or falls silent (a handler that sleeps past the total timeout times out).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import orjson

from .config import Timeouts
from .errors import BodyTooLarge, Refused, TimedOut
from .http import SMALL_BODY, header
from .upstream import Reply


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request as a site received it."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        return header(self.headers, name)


@dataclass(slots=True)
class MemoryReply:
    """A whole answer held in memory."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    released: bool = False

    async def read(self, limit: int) -> bytes:
        self.released = True
        if len(self.body) > limit:
            raise BodyTooLarge(limit)
        return self.body

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            for start in range(0, len(self.body), SMALL_BODY):
                yield self.body[start : start + SMALL_BODY]
        finally:
            self.released = True

    def release(self) -> None:
        self.released = True


def json_reply(status: int, data: object, headers: Sequence[tuple[str, str]] = ()) -> MemoryReply:
    """A JSON answer, with its length, as an OpenStack API gives it."""
    body = orjson.dumps(data)
    return MemoryReply(
        status,
        [("content-type", "application/json"), ("content-length", str(len(body))), *headers],
        body,
    )


Handler = Callable[[Exchange], Awaitable[MemoryReply]]


class MemoryUpstream:
    """Sites by origin (``http://denver.test``); an origin with no handler
    refuses the connection, as a closed port does. Every exchange a handler
    got is kept in :attr:`calls`, in order."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.calls: list[Exchange] = []

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        timeouts: Timeouts,
    ) -> Reply:
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = b"".join([chunk async for chunk in body])
        exchange = Exchange(method, url, tuple(headers), data)
        handler = self.handlers.get(exchange.origin)
        if handler is None:
            raise Refused(f"no site at {exchange.origin} (in memory)")
        self.calls.append(exchange)
        try:
            return await asyncio.wait_for(handler(exchange), timeouts.total)
        except asyncio.TimeoutError:
            raise TimedOut("the site stayed silent (in memory)", sent=True) from None

    async def close(self) -> None:
        """Nothing to close."""
