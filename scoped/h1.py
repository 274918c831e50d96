"""One keep-alive HTTP/1.1 connection to a site: write a request, parse the
answer with httptools (llhttp), hand the body out as it arrives.

Why not aiohttp's client (or aiosonic): on this machine, 64 concurrent
requests to nginx cost 65 µs of CPU each through an aiohttp ClientSession
and 60 µs through aiosonic, against 8 µs through an asyncio protocol feeding
httptools. On a forwarding path that is most of the gateway's cost
(tests/bench/bench_client.py measures the three). httptools is MagicStack's
binding of Node's llhttp, the parser uvicorn uses; what is left here is the
small part no parser does: framing the request, flow control both ways, the
end of a message, and whether the connection can be used again.

No pipelining: one exchange at a time per connection.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import cast

import httptools

HIGH_WATER = 256 * 1024
"""Response bytes buffered before reading from the site pauses."""
LOW_WATER = 64 * 1024
MAX_HEAD = 64 * 1024
"""Largest header block of an answer (names and values); a larger one ends
the call (found by fuzzing: a site could send headers without end)."""


class _TooLarge(Exception):
    """Raised in a parser callback to stop parsing an answer already failed."""


class ConnectionBroken(Exception):
    """The exchange ended without a whole answer.

    ``answered`` tells whether any byte of the answer arrived; a reused
    connection that broke before any did was most likely closed by the site
    while idle, before it read the request.
    """

    def __init__(self, detail: str, answered: bool, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.answered = answered
        self.timed_out = timed_out


class Deadlines:
    """The silence timers of every exchange on one event loop, grouped by
    the millisecond they fall in: one loop timer per millisecond, not one
    per exchange.

    A fan-out sends its calls within a few milliseconds, each with the same
    timeouts: a loop timer armed and cancelled per call (``call_at``, 2.3 µs
    with uvloop) became a set entry added and discarded. A timer fires at the
    end of its millisecond (libuv's timers count whole milliseconds too);
    :meth:`Connection._check_silence` decides on the exact times, as before.
    Gateway CPU per site call of a ``*`` over 1000 sites: see
    :func:`deadlines_of`.
    """

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        # No reference to the loop (its entry in _DEADLINES would keep it
        # alive): the loop timers are armed on each connection's own loop.
        self._buckets: dict[int, set[Connection]] = {}

    def add(self, when: float, conn: Connection) -> int:
        """Call ``conn._check_silence()`` at ``when`` (at most 1 ms later); the key."""
        key = math.ceil(when * 1000)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            conn.loop.call_at(key / 1000, self._fire, key)
        bucket.add(conn)
        return key

    def discard(self, key: int, conn: Connection) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.discard(conn)

    def _fire(self, key: int) -> None:
        bucket = self._buckets.pop(key, None)
        for conn in bucket or ():
            conn._timer_fired(key)


_DEADLINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines]
_DEADLINES = weakref.WeakKeyDictionary()


def deadlines_of(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The loop's :class:`Deadlines` (one per loop, made on first use).

    With it, 54 -> 50 µs of CPU per site call of a ``*`` over 1000 sites
    (tests/bench/bench_scale.py --quick, least per-request, alternating runs).
    """
    found = _DEADLINES.get(loop)
    if found is None:
        found = _DEADLINES[loop] = Deadlines()
    return found


class Connection(asyncio.Protocol):
    """A connection to one origin, used for one exchange at a time.

    Slotted, and its parser kept from one exchange to the next when the last
    answer ended cleanly (llhttp reads a keep-alive connection's answers one
    after another): each site call of a fan-out sets and reads these fields
    a few dozen times, and a new parser looks its callbacks up again.
    Gateway CPU per site call of a ``*`` over 1000 sites: 57 -> 53 µs
    (tests/bench/bench_scale.py --quick, least per-request, alternating runs).
    """

    __slots__ = (
        "_answered",
        "_buffered",
        "_chunks",
        "_complete",
        "_deadlines",
        "_doubt",
        "_doubt_after",
        "_doubted",
        "_drain",
        "_error",
        "_head",
        "_head_by",
        "_head_bytes",
        "_head_only",
        "_headers_done",
        "_interim",
        "_keep_alive",
        "_kept_parser",
        "_last",
        "_listener",
        "_parser",
        "_paused",
        "_spoiled",
        "_timeout",
        "_timer",
        "_waiter",
        "closed",
        "headers",
        "idle_since",
        "keep_for",
        "loop",
        "origin",
        "status",
        "tag",
        "tls",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: str) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.tls: ssl.SSLObject | None = None
        """A new TLS connection's, until the pool keeps its session."""
        self.closed = False
        self.idle_since = 0.0
        self.keep_for = math.inf
        """Seconds it may stay idle and still be reused, as far as the site
        said (the pool has its own limit too)."""
        self._parser: httptools.HttpResponseParser | None = None
        """The exchange's parser; None between exchanges."""
        self._kept_parser: httptools.HttpResponseParser | None = None
        """The last exchange's, kept for the next one: its answer ended cleanly."""
        self._drain: asyncio.Future[None] | None = None
        self._deadlines = deadlines_of(loop)
        self._listener: Callable[[Connection], None] | None = None
        """Called once when the exchange of :meth:`start` ends, fails, or
        pauses reading (its body is large): instead of waking a coroutine."""
        self.tag = 0
        """The caller's mark of the exchange of :meth:`start` (its index)."""
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self._head: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._interim = False
        self._head_only = False
        self._headers_done = False
        self._complete = False
        self._keep_alive = False
        self._error: ConnectionBroken | None = None
        self._answered = False
        self._paused = False
        self._head_bytes = 0
        self._head_by: float | None = None
        self._spoiled = False
        self._last = 0.0
        self._timeout = 0.0
        self._timer: int | None = None
        """The key of this exchange's silence timer in :attr:`_deadlines`."""
        self._doubt: Callable[[], None] | None = None
        self._doubt_after = 0.0
        self._doubted = -1.0

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        if self._error is not None:
            return
        self._answered = True
        self._last = self.loop.time()
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionBroken("the site switched protocols", True))
        except httptools.HttpParserError as err:
            self._fail(ConnectionBroken(f"the site's answer is not valid HTTP ({err})", True))
        if self._listener is not None and (self._complete or self._paused):
            # Told once the parser is done with these bytes (not from within
            # its callbacks: the listener may give the connection back).
            self._notify()

    def eof_received(self) -> bool | None:
        return None  # close our side too: no half-open connections

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self._parser is None or self._complete or self._error is not None:
            return
        if self._headers_done and not self._framed():
            self._message_done()  # an answer delimited by the end of the connection
            self._keep_alive = False
            if self._listener is not None:
                self._notify()
            return
        where = "in the middle of its answer" if self._answered else "before answering"
        self._fail(ConnectionBroken(f"the site closed the connection {where}", self._answered))

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks -----------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            # Bytes after the whole answer, nobody asked for: the connection
            # (and its parser, mid-way through them) is not used again.
            self._spoiled = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD:
            self._fail(ConnectionBroken(f"the site's answer head is over {MAX_HEAD} bytes", True))
            raise _TooLarge  # stops the parser; data_received keeps the first error
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue and friends: the answer is still to come
            self._interim = True
            self.headers = []
            return
        self.status = status
        self._headers_done = True
        self._wake_head()
        if self._head_only:  # a HEAD answer has no body, whatever it announces
            self._keep_alive = self._parser.should_keep_alive()
            self._message_done()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake_body()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._complete:
            return
        assert self._parser is not None
        self._keep_alive = self._parser.should_keep_alive()
        self._message_done()

    # -- the exchange ------------------------------------------------------

    async def request(
        self,
        head: bytes,
        body: bytes | AsyncIterator[bytes] | None,
        chunked: bool,
        head_only: bool,
        timeout: float,
        doubt: Callable[[], None] | None = None,
        doubt_after: float = 0.0,
        length: int | None = None,
    ) -> None:
        """Send a request and wait for the status line and headers of its answer.

        ``length`` is the ``Content-Length`` the head announces for a body
        streamed as it is (not chunked): the stream must be exactly that long,
        or the exchange ends and the connection is closed (a longer one would
        put its excess on the wire as the start of another request).

        ``timeout`` bounds each silence of the site: before the answer, and
        between two parts of its body. ``doubt`` is called once if no byte of
        the answer has come ``doubt_after`` seconds after the request (on the
        same timer: it costs nothing when the answer comes in time), and
        again whenever the site falls silent that long in the middle of it.
        """
        self._reset()
        parser, self._kept_parser = self._kept_parser, None
        self._parser = httptools.HttpResponseParser(self) if parser is None else parser
        self._head_only = head_only
        self._timeout = timeout
        self._last = self.loop.time()
        first = self._last + timeout
        if doubt is not None and doubt_after < timeout:
            self._doubt, self._doubt_after = doubt, doubt_after
            first = self._last + doubt_after
        self._timer = self._deadlines.add(first, self)
        transport = self.transport
        assert transport is not None
        if self.closed or transport.is_closing():
            raise ConnectionBroken("the connection was closed", False)
        if isinstance(body, bytes):
            transport.write(head + body)
        else:
            transport.write(head)
            if body is not None:
                await self._send_stream(body, chunked, length)
        # The whole head of the answer must come within the timeout once the
        # request is sent, not only some byte of it (a site trickling header
        # lines or 100 Continues would otherwise hold the call for ever).
        self._head_by = self.loop.time() + timeout
        if not self._headers_done:
            if self._error is not None:
                raise self._error
            self._head = self.loop.create_future()
            await self._head
            if self._error is not None and not self._headers_done:
                raise self._error

    def start(
        self,
        head: bytes,
        timeout: float,
        listener: Callable[[Connection], None],
        tag: int,
        doubt: Callable[[], None] | None = None,
        doubt_after: float = 0.0,
    ) -> bool:
        """:meth:`request` of a request without body nor coroutine: the head
        is written, and ``listener(self)`` is called once the answer is
        complete (:attr:`complete`), failed (:attr:`error`), or paused for a
        large body (neither): after the parser is done with the bytes that
        completed it, or from within it when the answer fails (its head too
        large). False: the connection is closed (nothing sent)."""
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return False
        self._reset()
        parser, self._kept_parser = self._kept_parser, None
        self._parser = httptools.HttpResponseParser(self) if parser is None else parser
        self._timeout = timeout
        self._last = now = self.loop.time()
        first = now + timeout
        if doubt is not None and doubt_after < timeout:
            self._doubt, self._doubt_after = doubt, doubt_after
            first = now + doubt_after
        self._timer = self._deadlines.add(first, self)
        self._listener = listener
        self.tag = tag
        transport.write(head)
        self._head_by = now + timeout
        return True

    def detach(self) -> None:
        """No more calls to the listener of :meth:`start`."""
        self._listener = None

    async def _send_stream(
        self, body: AsyncIterator[bytes], chunked: bool, length: int | None
    ) -> None:
        transport = self.transport
        assert transport is not None
        sent = 0
        async for chunk in body:
            if self._headers_done or self._error is not None or self.closed:
                # The site answered (or broke) before taking the whole body:
                # the connection cannot carry another exchange.
                self._spoiled = True
                return
            if chunk:
                if chunked:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    sent += len(chunk)
                    if length is not None and sent > length:
                        self._unframed(f"longer than the {length} bytes its head announces")
                    transport.write(chunk)
            if self._drain is not None and not self._drain.done():
                await self._drain
            self._last = self.loop.time()
        if chunked and not self.closed:
            transport.write(b"0\r\n\r\n")
        elif length is not None and sent < length and not self.closed:
            self._unframed(f"{sent} bytes long, where its head announces {length}")

    def _unframed(self, detail: str) -> None:
        """The request body is not as long as its head says: nothing more
        is sent, the site sees a request cut short (and the connection
        closed), never the start of another one."""
        self._spoiled = True
        err = ConnectionBroken(f"the request body is {detail}; not sent", self._answered)
        self._fail(err)
        raise err

    async def read_chunk(self) -> bytes:
        """The next part of the answer's body; ``b""`` at its end."""
        while not self._chunks:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self.loop.create_future()
            await self._waiter
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < LOW_WATER and self.transport is not None:
            self._paused = False
            self._last = self.loop.time()  # our reader was slow, not the site
            if not self.closed:
                self.transport.resume_reading()
        return chunk

    def take_whole(self) -> list[bytes] | None:
        """The whole body at once when the answer is complete and reading
        from the site is not paused (else None: :meth:`read_chunk` it)."""
        if not self._complete or self._paused:
            return None
        chunks = list(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return chunks

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def error(self) -> ConnectionBroken | None:
        """Why the exchange failed (None: it did not)."""
        return self._error

    @property
    def heard_at(self) -> float:
        """When the site last sent a byte of this exchange (or it began)."""
        return self._last

    @property
    def answered(self) -> bool:
        return self._answered

    def silent_since(self, heard_at: float) -> bool:
        """The exchange is under way and nothing came since ``heard_at``."""
        return (
            self._parser is not None
            and not self._complete
            and self._error is None
            and self._last == heard_at
        )

    def abort(self, err: ConnectionBroken) -> None:
        """End the exchange with ``err`` (the caller found the site unreachable)."""
        if self._parser is not None and not self._complete:
            self._fail(err)

    @property
    def reusable(self) -> bool:
        """Whether another exchange can follow on this connection."""
        return (
            self._complete
            and self._keep_alive
            and not self._spoiled
            and not self.closed
            and not self._chunks
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def finish(self) -> None:
        """End the exchange: the connection is idle, or closed if it cannot be reused."""
        if self._timer is not None:
            self._deadlines.discard(self._timer, self)
            self._timer = None
        if not self.reusable:
            self.close()
        elif not self._head_only:
            # Ended by the parser itself (a HEAD answer is ended here, where
            # the parser would wait for the body its head announces).
            self._kept_parser = self._parser
        self._parser = None
        self.idle_since = self.loop.time()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _framed(self) -> bool:
        """Whether the answer says where its body ends (else: at connection close)."""
        for name, value in self.headers:
            if name == "content-length" or (
                name == "transfer-encoding" and "chunked" in value.lower()
            ):
                return True
        return self.status in (204, 304)

    def _message_done(self) -> None:
        self._complete = True
        if self._timer is not None:
            self._deadlines.discard(self._timer, self)
            self._timer = None
        self._wake_body()

    def _notify(self) -> None:
        listener, self._listener = self._listener, None
        assert listener is not None
        listener(self)

    def _fail(self, err: ConnectionBroken) -> None:
        if self._error is None:
            self._error = err
        self._keep_alive = False
        if self._timer is not None:
            self._deadlines.discard(self._timer, self)
            self._timer = None
        self.close()
        if self._listener is not None:
            self._notify()
        self._wake_head()
        self._wake_body()

    def _timer_fired(self, key: int) -> None:
        if self._timer == key:  # (else: cancelled, or armed anew since)
            self._check_silence()

    def _check_silence(self) -> None:
        self._timer = None
        if self._complete or self._error is not None or self._parser is None:
            return
        now = self.loop.time()
        doubt = self._doubt if not self._paused and self._doubted != self._last else None
        if doubt is not None and now >= self._last + self._doubt_after:
            self._doubted = self._last  # once per silence
            doubt()
            if self._error is not None:
                return
            doubt = None
        deadline = self._last + self._timeout
        if self._paused:  # our reader is behind: the site is not silent
            deadline = now + self._timeout
        head_by = self._head_by if not self._headers_done else None
        if head_by is not None and now >= head_by:
            self._fail(
                ConnectionBroken(
                    f"no complete answer head from the site within {self._timeout:g} s",
                    self._answered,
                    True,
                )
            )
            return
        if head_by is not None:
            deadline = min(deadline, head_by)
        if now >= deadline:
            self._fail(
                ConnectionBroken(
                    f"no answer from the site for {self._timeout:g} s", self._answered, True
                )
            )
        else:
            if doubt is not None:
                deadline = min(deadline, self._last + self._doubt_after)
            self._timer = self._deadlines.add(deadline, self)

    def _wake_head(self) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def _wake_body(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
