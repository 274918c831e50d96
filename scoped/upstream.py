"""Upstream calls over HTTP: one pooled aiohttp client per process.

aiohttp, not httpx, on the forwarding path: measured here, a naive httpx
proxy spent 10-15x the CPU per request of an aiohttp one (shared/perf-notes.md;
tests/bench/bench_gateway.py measures this gateway beside HAProxy). Every
network failure becomes a :class:`Failure` of one of the kinds DESIGN.md §8
reports (``refused``, ``timeout``, ``reset``, ``error``), with ``sent`` telling
whether the site may have processed the request (the non-idempotent rule).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import aiohttp
from yarl import URL

from .config import Timeouts
from .http import BodyTooLarge

CHUNK = 64 * 1024


class Failure(Exception):  # noqa: N818 - an outcome, as reported in X-Scope-Sites
    """An upstream call that got no HTTP answer."""

    def __init__(self, kind: str, sent: bool, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.sent = sent
        self.detail = detail


class Reply(Protocol):
    """An upstream answer whose body has not been read yet."""

    status: int
    headers: list[tuple[str, str]]

    async def read(self, limit: int) -> bytes: ...

    def stream(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class Upstream(Protocol):
    """Sends one request to one URL; the executor holds the policies."""

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        timeouts: Timeouts,
    ) -> Reply: ...


class _AiohttpReply:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = [
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in resp.raw_headers
        ]

    async def read(self, limit: int) -> bytes:
        resp = self._resp
        length = resp.content_length
        if length is not None and length > limit:
            resp.close()
            raise BodyTooLarge(limit)
        try:
            if length is not None:
                return await resp.read()  # bounded above; releases the connection
            parts: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    resp.close()
                    raise BodyTooLarge(limit)
                parts.append(chunk)
            resp.release()
            return b"".join(parts)
        except (aiohttp.ClientError, TimeoutError) as err:
            resp.close()
            raise _failure(err, sent=True) from None

    async def stream(self) -> AsyncIterator[bytes]:
        resp = self._resp
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                yield chunk
        finally:
            resp.release()

    def release(self) -> None:
        self._resp.release()


class AiohttpUpstream:
    """The process's upstream client: pooled keep-alive connections to every site."""

    def __init__(self, max_concurrency: int = 1024) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._limit = asyncio.Semaphore(max_concurrency)
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                # The gateway bounds concurrency itself; aiohttp's default of
                # 100 per connector hurt the tail of wide fan-outs (perf-notes).
                limit=0,
                limit_per_host=0,
                ttl_dns_cache=300,
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # bodies pass through as they are
                # Send the client's headers, not aiohttp's defaults.
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _timeout(self, t: Timeouts) -> aiohttp.ClientTimeout:
        found = self._timeouts.get(t)
        if found is None:
            # connect: to get a connection (pool wait included); total: the
            # longest the site may stay silent (for its status line, then
            # between reads), so a large image keeps flowing as long as it moves.
            found = aiohttp.ClientTimeout(
                total=None, connect=t.connect, sock_connect=t.connect, sock_read=t.total
            )
            self._timeouts[t] = found
        return found

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        timeouts: Timeouts,
    ) -> Reply:
        if self._limit.locked():  # only then pay for a timed wait
            try:
                await asyncio.wait_for(self._limit.acquire(), timeouts.connect)
            except TimeoutError:
                raise Failure("error", False, "too many upstream calls in flight") from None
        else:
            await self._limit.acquire()
        try:
            resp = await self._client().request(
                method,
                # Path and query come from the client already encoded: send
                # them as they are (and skip re-quoting on every call).
                URL(url, encoded=True),
                headers=list(headers),
                data=body,
                allow_redirects=False,
                timeout=self._timeout(timeouts),
                compress=False,
                auto_decompress=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise _failure(err, sent=False) from None
        finally:
            self._limit.release()
        return _AiohttpReply(resp)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _failure(err: BaseException, sent: bool) -> Failure:
    """Map a client exception to a reported failure kind."""
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return Failure("timeout", False, "no connection within the connect timeout")
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return Failure("error", False, f"name resolution failed ({err.os_error})")
    if isinstance(err, aiohttp.ClientConnectorError):
        code = getattr(err.os_error, "errno", None)
        kind = "refused" if code == errno.ECONNREFUSED else "error"
        return Failure(kind, False, str(err.os_error))
    if isinstance(err, (TimeoutError, aiohttp.ServerTimeoutError)):
        return Failure("timeout", True, "no answer within the timeout")
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return Failure("reset", True, "the site closed the connection")
    if isinstance(err, (aiohttp.ClientOSError, OSError)):
        code = getattr(err, "errno", None)
        if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return Failure("reset", True, "connection reset")
        if code == errno.ECONNREFUSED:
            return Failure("refused", False, "connection refused")
        return Failure("error", sent, str(err))
    return Failure("error", sent, f"{type(err).__name__}: {err}")
