"""Upstream calls: one pool of keep-alive HTTP/1.1 connections per process.

Every site is an origin (scheme, host, port) with its idle connections; a
call takes one (or opens one within the site's connect timeout), sends the
request, and gives the answer back unread, so the executor decides whether
to stream it, read it for a merge, or drop it. The wire work is in
:mod:`scoped.h1` (why not aiohttp's client: measured there). Every network
failure becomes one of the :class:`~scoped.errors.Failure` classes
(:class:`Refused`, :class:`TimedOut`, :class:`Reset`, :class:`CallError`),
in one place (:func:`_connect_failure`, :func:`broken`), with ``sent``
telling whether the site may have processed the request.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from .config import Timeouts, TlsSettings
from .errors import BodyTooLarge, CallError, Failure, Refused, Reset, TimedOut
from .h1 import Connection, ConnectionBroken
from .http import IDEMPOTENT, content_length
from .tls import RESUME, client_context

__all__ = ["Failure", "HttpUpstream", "Reply", "Upstream", "broken", "header_lines", "split_url"]


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

    async def close(self) -> None:
        """Close idle connections; the gateway is shutting down."""


KEEPALIVE = 30.0
"""Seconds an idle connection is kept for reuse, or less when the site says
it keeps it less (``Keep-Alive: timeout=N``, as Apache does: 5 s)."""
SERVER_KEEPALIVE = 75
"""Seconds a gateway keeps a client's idle connection open: longer than
:data:`KEEPALIVE`, so that between two gateways the pool closes an idle
connection first and a request never meets one its peer closed under it
(a POST sent as the peer's close crosses it on the wire fails, unrepeatable).
Also nginx's default."""
MAX_IDLE = 256
"""Idle connections kept per origin; more are closed when released."""


@dataclass(eq=False)
class _Origin:
    key: str
    host: str
    port: int
    host_header: str
    tls: bool
    idle: list[Connection] = field(default_factory=list)
    session: ssl.SSLSession | None = None
    """The TLS session of the last new connection, offered by the next one."""


def split_url(url: str) -> tuple[str, str]:
    """``http://h:1/a?b`` -> (``http://h:1``, ``/a?b``): origin and target."""
    start = url.find("://")
    if start < 0:
        raise CallError(f"not an absolute URL: {url!r}")
    slash = url.find("/", start + 3)
    if slash < 0:
        query = url.find("?", start + 3)
        if query < 0:
            return url, "/"
        return url[:query], "/" + url[query:]
    return url[:slash], url[slash:]


def _origin(key: str) -> _Origin:
    scheme, _, netloc = key.partition("://")
    if scheme not in ("http", "https") or not netloc or "@" in netloc:
        raise CallError(f"cannot call {key!r}: expected http(s)://HOST[:PORT]")
    tls = scheme == "https"
    host, port = netloc, 443 if tls else 80
    if netloc.startswith("["):  # [IPv6]:port
        end = netloc.find("]")
        host, rest = netloc[1:end], netloc[end + 1 :]
        if rest.startswith(":"):
            port = _port(rest[1:], key)
    elif ":" in netloc:
        host, _, text = netloc.rpartition(":")
        port = _port(text, key)
    return _Origin(key, host, port, netloc, tls)


def _port(text: str, key: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise CallError(f"cannot call {key!r}: bad port {text!r}")
    return int(text)


def _head(
    method: str,
    target: str,
    host: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | AsyncIterator[bytes] | None,
) -> tuple[bytes, bool, int | None]:
    """The request line and headers, whether the body goes chunked, and the
    length a stream sent as it is must have (its ``Content-Length``)."""
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    chunked = False
    length = None
    lengths = [v for k, v in headers if k == "content-length"]
    if isinstance(body, bytes):
        if lengths:
            raise CallError("a body of bytes with a content-length of its own; not sent")
        lines.append(f"content-length: {len(body)}")
    elif body is None:
        if method in ("POST", "PUT", "PATCH"):
            lines.append("content-length: 0")
    elif not lengths:
        lines.append("transfer-encoding: chunked")
        chunked = True
    elif len(lengths) > 1 or not lengths[0].isdigit():
        # The one the body is framed by must be the one the site reads.
        raise CallError(f"content-length {', '.join(lengths)!r} is not one length; not sent")
    else:
        length = int(lengths[0])
    return header_lines(lines) + b"\r\n", chunked, length


def header_lines(lines: Sequence[str]) -> bytes:
    """``lines`` as HTTP/1.1 writes them, each ended by CRLF; a
    :class:`CallError` if one holds a line break (it would split into a
    header of its own) or is not Latin-1."""
    text = "".join([f"{line}\r\n" for line in lines])
    breaks = len(lines)
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise CallError("a header or the path holds a line break; not sent")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise CallError("a header or the path is not Latin-1; not sent") from None


class _Reply:
    __slots__ = ("_conn", "_pool", "headers", "status")

    def __init__(self, conn: Connection, pool: HttpUpstream) -> None:
        self._conn: Connection | None = conn
        self._pool = pool
        self.status = conn.status
        self.headers = conn.headers

    async def read(self, limit: int) -> bytes:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the answer was already released")
        whole = conn.take_whole()
        if whole is not None:  # the usual small answer, here with its head: no await
            self.release()
            if sum(map(len, whole)) > limit:
                raise BodyTooLarge(limit)
            return whole[0] if len(whole) == 1 else b"".join(whole)
        # By the announced length, unless the answer is already whole (a HEAD
        # answer announces a length it does not carry).
        length = None if conn.complete else content_length(self.headers)
        if length is not None and length > limit:
            self.release()
            raise BodyTooLarge(limit)
        parts: list[bytes] = []
        size = 0
        try:
            while chunk := await conn.read_chunk():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                parts.append(chunk)
        except ConnectionBroken as err:
            raise broken(err) from None
        finally:
            self.release()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def stream(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the answer was already released")
        try:
            while chunk := await conn.read_chunk():
                yield chunk
        except ConnectionBroken as err:
            raise broken(err) from None
        finally:
            self.release()

    def release(self) -> None:
        """Give the connection back (or close it if the answer was not read to its end)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)


class Gate:
    """At most ``size`` calls in flight; beyond, callers wait their turn (first
    come, first served), each within its own timeout.

    An ``asyncio.Semaphore`` asked ``locked()`` and ``acquire()`` for every
    call (a generator over its waiters, a coroutine). A free slot is taken
    here by :meth:`try_enter` without a coroutine; with the other per-call
    cuts of this module (the exchange inline in :meth:`HttpUpstream.send`, an
    idle connection taken without a coroutine or getpid(), a body already
    whole taken without awaiting), 71 -> 67 µs of CPU per site call of a
    ``*`` list over 1000 sites (tests/bench/bench_scale.py --quick, least
    per-request figure, alternating runs against the code before).
    """

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: deque[asyncio.Future[None]] = deque()

    def try_enter(self) -> bool:
        """Take a slot if one is free and nobody waits for one."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def enter(self, timeout: float) -> None:
        """Wait for a slot, at most ``timeout`` seconds (:class:`TimeoutError`)."""
        if self.try_enter():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # handed a slot as it gave up: the next one gets it
            raise

    def leave(self) -> None:
        """Give a slot back: to the first caller still waiting, else to the free ones."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class HttpUpstream:
    """The process's upstream client: pooled keep-alive connections to every site.

    ``tls`` verifies ``https://`` sites (and may present a client
    certificate): :func:`scoped.tls.client_context` makes it from the
    config; without one, the system's CAs. A new TLS connection offers the
    session of the origin's last one (:class:`scoped.tls.ResumingContext`);
    ``on_handshake`` hears ``"full"`` or ``"resumed"`` for each.
    """

    def __init__(
        self,
        max_concurrency: int = 1024,
        tls: ssl.SSLContext | None = None,
        on_handshake: Callable[[str], None] | None = None,
    ) -> None:
        self._limit = Gate(max_concurrency)
        self._origins: dict[str, _Origin] = {}
        self._tls = tls
        self._on_handshake = on_handshake
        self._closed = False
        self._checks: set[asyncio.Task[None]] = set()

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        timeouts: Timeouts,
    ) -> Reply:
        key, target = split_url(url)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _origin(key)
        head, chunked, length = _head(method, target, origin.host_header, headers, body)
        limit = self._limit
        if not limit.try_enter():  # only then pay for a timed wait
            try:
                await limit.enter(timeouts.connect)
            except asyncio.TimeoutError:
                raise CallError("too many upstream calls in flight") from None
        try:
            # The exchange is here, not in a coroutine of its own: one fewer
            # per site call (see Gate for the figure).
            while True:
                kept = _kept(origin)
                fresh = kept is None
                conn = await self._connect(origin, timeouts.connect) if kept is None else kept
                # A kept connection whose answer does not begin within the connect
                # timeout may be dead (a partition drops packets, it does not
                # close connections): then a new connection is tried, and if
                # none comes either, the site is unreachable (_check_reachable).
                # Without it a cut link costs the total timeout (60 s), not one
                # connect timeout. The check rides on the exchange's own timer.
                doubt = partial(self._doubt, origin, conn, timeouts.connect)
                try:
                    await conn.request(
                        head,
                        body,
                        chunked,
                        method == "HEAD",
                        timeouts.total,
                        doubt,
                        timeouts.connect,
                        length,
                    )
                except ConnectionBroken as err:
                    conn.finish()
                    # A kept-alive connection the site closed while it was idle,
                    # before it read this request: send it again on another, as
                    # HTTP clients do for requests that are safe to repeat
                    # (RFC 9110 §9.2.2). Bounded: each broken connection is
                    # dropped, and a fresh one is never retried.
                    if (
                        not fresh
                        and not err.answered
                        and not err.timed_out
                        and not isinstance(body, AsyncIterator)
                        and method in IDEMPOTENT
                    ):
                        continue
                    if fresh and origin.tls and not err.answered and not err.timed_out:
                        # TLS 1.3 ends the client's side of the handshake before
                        # the server checks its certificate: a refused one is a
                        # connection closed unanswered (asyncio drops the alert).
                        err.detail += (
                            " (a new TLS connection: if the site requires a client certificate, "
                            "this gateway's tls.cert must be one the site's CA bundle trusts)"
                        )
                    raise broken(err) from None
                except BaseException:
                    conn.finish()  # cancelled mid-exchange: the connection is closed
                    raise
                return _Reply(conn, self)

        finally:
            limit.leave()

    def begin(
        self,
        key: str,
        target: str,
        lines: bytes,
        timeouts: Timeouts,
        listener: Callable[[Connection], None],
        tag: int,
    ) -> Connection | None:
        """A GET without a body, on an idle kept connection to origin ``key``,
        answered by callback (:mod:`scoped.fanout`): ``listener(conn)`` once
        the answer is whole, failed (``conn.error``), or paused (a large
        body); then :meth:`end`. ``lines`` are the header lines after
        ``host``, ending with the empty line.

        None, with nothing sent nor held: no idle connection (a new one is
        :meth:`send`'s to make, within its connect timeout), no free slot,
        or a target :meth:`send` refuses, saying why.
        """
        origin = self._origins.get(key)
        if origin is None:
            return None
        try:
            start = header_lines((f"GET {target} HTTP/1.1", f"host: {origin.host_header}"))
        except CallError:
            return None
        limit = self._limit
        if not limit.try_enter():
            return None
        conn = _kept(origin)
        if conn is None:
            limit.leave()
            return None
        doubt = partial(self._doubt, origin, conn, timeouts.connect)
        if not conn.start(start + lines, timeouts.total, listener, tag, doubt, timeouts.connect):
            conn.close()
            limit.leave()
            return None
        return conn

    def end(self, conn: Connection) -> Reply:
        """The exchange :meth:`begin` started is over for its caller (its
        listener was called, or it gives up): the slot is free again, and
        the answer is a :class:`Reply` as :meth:`send` gives it (its
        ``release`` keeps the connection, or closes it mid-exchange)."""
        self._limit.leave()
        conn.detach()
        return _Reply(conn, self)

    def _doubt(self, origin: _Origin, conn: Connection, timeout: float) -> None:
        if not self._closed:
            heard_at = conn.heard_at
            task = asyncio.ensure_future(self._check_reachable(origin, conn, timeout, heard_at))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _check_reachable(
        self, origin: _Origin, conn: Connection, timeout: float, heard_at: float
    ) -> None:
        """A new connection to the site, while ``conn`` waits for its answer
        (or the rest of it): none within the connect timeout, and nothing
        heard on ``conn`` meanwhile, means the site is cut off, and ``conn``'s
        exchange ends as a timeout (the request was sent: no failover for a
        write; a body being streamed breaks off). One that comes means the
        site is only slow; it joins the idle pool."""
        try:
            fresh = await self._connect(origin, timeout)
        except Failure as err:
            if conn.silent_since(heard_at):
                what = "its answer stopped" if conn.answered else "no answer"
                conn.abort(
                    ConnectionBroken(
                        f"{what} on this connection, and no new connection: "
                        f"the site is unreachable ({err.detail})",
                        answered=conn.answered,
                        timed_out=True,
                    )
                )
            return
        fresh.idle_since = asyncio.get_running_loop().time()
        if self._closed or len(origin.idle) >= MAX_IDLE:
            fresh.close()
        else:
            origin.idle.append(fresh)

    async def _connect(self, origin: _Origin, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        if not origin.tls:
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: Connection(loop, origin.key), origin.host, origin.port
                    ),
                    timeout,
                )
            except (asyncio.TimeoutError, OSError) as err:
                raise _connect_failure(err) from None
            return conn
        return await self._connect_tls(origin, timeout)

    async def _connect_tls(self, origin: _Origin, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        if self._tls is None:
            # The system's CAs (SSL_CERT_FILE / SSL_CERT_DIR honoured).
            self._tls = client_context(TlsSettings())
        offered = RESUME.set(origin)  # the session wrap_bio offers (scoped.tls)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(loop, origin.key),
                    origin.host,
                    origin.port,
                    ssl=self._tls,
                    server_hostname=origin.host,
                ),
                timeout,
            )
        except (asyncio.TimeoutError, OSError) as err:
            raise _connect_failure(err, origin.host_header) from None
        finally:
            RESUME.reset(offered)
        tls = conn.transport.get_extra_info("ssl_object") if conn.transport else None
        if tls is not None:
            conn.tls = tls
            if self._on_handshake is not None:
                self._on_handshake("resumed" if tls.session_reused else "full")
        return conn

    def release(self, conn: Connection) -> None:
        if conn.tls is not None:
            # Kept once an answer came: a TLS 1.3 server sends its session
            # tickets after the handshake, before its first answer.
            origin = self._origins.get(conn.origin)
            if origin is not None:
                origin.session = conn.tls.session
            conn.tls = None
        conn.keep_for = _keep_for(conn.headers)
        conn.finish()
        if conn.closed:
            return
        origin = self._origins.get(conn.origin)
        if self._closed or origin is None or len(origin.idle) >= MAX_IDLE:
            conn.close()
        else:
            origin.idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._checks):
            task.cancel()
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()


def _kept(origin: _Origin) -> Connection | None:
    """An idle connection to ``origin`` that may still be used (the most
    recently idle first), or None; those kept too long are closed."""
    idle = origin.idle
    if idle:
        # The loop of a kept connection: asyncio.get_running_loop() makes a
        # getpid() system call on every call (Python 3.11).
        now = idle[-1].loop.time()
        expired = now - KEEPALIVE
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > max(expired, now - conn.keep_for):
                return conn
            conn.close()
    return None


def _connect_failure(err: BaseException, where: str = "") -> Failure:
    """What a failed connect says: nothing was sent."""
    if isinstance(err, asyncio.TimeoutError):
        return TimedOut("no connection within the connect timeout")
    if isinstance(err, socket.gaierror):
        return CallError(f"name resolution failed ({err})")
    if isinstance(err, ssl.SSLCertVerificationError):
        return CallError(
            f"TLS: the certificate of {where} is not trusted here ({err.verify_message}); "
            "sites are verified against this gateway's tls.ca, the federation's CA bundle"
        )
    if isinstance(err, ssl.SSLError):
        return CallError(f"TLS handshake with {where} failed ({err.reason or err})")
    if isinstance(err, OSError) and err.errno == errno.ECONNREFUSED:
        return Refused("connection refused")
    return CallError(str(err))


def broken(err: ConnectionBroken) -> Failure:
    """What an exchange that broke says: the site may have processed it."""
    if err.timed_out:
        return TimedOut(err.detail, sent=True)
    return Reset(err.detail, sent=True)


def _keep_for(headers: list[tuple[str, str]]) -> float:
    """How long a connection may idle before reuse: :data:`KEEPALIVE`, or a
    second less than the ``Keep-Alive: timeout=N`` the site announced (it
    closes at N; the margin covers the close crossing a request on the wire)."""
    for name, value in headers:
        if name == "keep-alive":
            for param in value.split(","):
                key, _, number = param.strip().partition("=")
                if key.strip().lower() == "timeout":
                    try:
                        return max(0.0, min(KEEPALIVE, float(number) - 1.0))
                    except ValueError:
                        return KEEPALIVE
    return KEEPALIVE
