"""Hostile sites for the upstream client (issue 17, part 2): ``HttpUpstream``
(scoped/upstream.py) over ``scoped/h1.py`` (httptools) against a raw asyncio
server on 127.0.0.1 (ports 33000-33999) that answers garbage.

Fuzzed with hypothesis, not atheris: atheris is not used in this project;
hypothesis builds the hostile answers from parts (random bytes, bad status
lines, conflicting Content-Length / Transfer-Encoding, two Content-Length
headers, obs-fold lines, bare LF line endings, 1xx floods, broken chunked
bodies, an early close mid-headers or mid-body, bytes after the answer) and
shrinks a failure to the smallest such answer.

The property: every exchange ends, within the timeouts set (connect 0.5 s,
total 0.3 s; each exchange is bounded by ``asyncio.wait_for`` at 5 s, and
running into that bound is a finding, a hang), in a Reply or a
:class:`~scoped.errors.Failure`, never another exception; and after a
garbage answer the pool does not use that connection again: the next,
well-formed exchange on the same ``HttpUpstream`` gets the right body.

Bounds measured here (and in the tests below): a body is bounded by
``read(limit)``, which raises BodyTooLarge (announced length past the limit:
at once; chunked or close-delimited: once the count passes it). The header
block is bounded at 64 KiB (scoped.h1.MAX_HEAD), and the whole head of an
answer must come within ``total`` once the request is sent.

The findings of the first run (an unbounded header block, a trickled header
block or 100 Continue flood holding a call for ever) are fixed; their tests
stay as regression tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from scoped.config import Timeouts
from scoped.errors import BodyTooLarge, Failure, Reset, TimedOut
from scoped.upstream import HttpUpstream

FAST = Timeouts(connect=0.5, total=0.3)
SLOWER = Timeouts(connect=0.5, total=1.0)
BOUND = 5.0
"""Each exchange is given this long; reaching it is a hang (a finding)."""
LIMIT = 1 << 20
PORTS = range(33000, 34000)
_ports = random.Random()  # not the global one, which hypothesis seeds

Script = Callable[[asyncio.StreamWriter], Awaitable[None]]


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)


@dataclass
class Hostile:
    """A site whose first connection answers its first request with
    ``script`` (then, if still open, every later request with ``reuse``);
    every other connection answers well (``right``)."""

    script: Script
    close_after: bool = True
    connections: int = 0
    url: str = ""
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> Hostile:
        for _ in range(64):
            port = _ports.choice(PORTS)
            try:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
            except OSError:
                continue
            self.url = f"http://127.0.0.1:{port}"
            return self
        raise RuntimeError("no free port in 33000-33999")

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        n = self.connections
        self.connections += 1
        try:
            if n == 0:
                await reader.readuntil(b"\r\n\r\n")
                await self.script(writer)
                if self.close_after:
                    return
            for _ in range(100):
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                writer.write(ok(b"reuse" if n == 0 else b"right"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@dataclass
class Outcome:
    kind: str  # "reply" (read whole), "failure" (send raised), "read-failure"
    status: int = 0
    body: bytes = b""
    error: Failure | None = None


async def exchange(
    up: HttpUpstream,
    url: str,
    method: str = "GET",
    timeouts: Timeouts = FAST,
    limit: int = LIMIT,
) -> Outcome:
    """One call, bounded by BOUND; a Failure is an outcome, anything else raises."""

    async def call() -> Outcome:
        body = b"x" if method == "POST" else None
        try:
            reply = await up.send(method, url, [], body, timeouts)
        except Failure as err:
            return Outcome("failure", error=err)
        try:
            data = await reply.read(limit)
        except Failure as err:
            return Outcome("read-failure", reply.status, error=err)
        return Outcome("reply", reply.status, data)

    try:
        return await asyncio.wait_for(call(), BOUND)
    except asyncio.TimeoutError:
        raise AssertionError(f"hang: no outcome within {BOUND} s") from None


async def hostile_then_well(
    script: Script, method: str = "GET", close_after: bool = True
) -> tuple[Outcome, Outcome]:
    async with Hostile(script, close_after) as site:
        up = HttpUpstream()
        try:
            first = await exchange(up, site.url + "/first", method)
            second = await exchange(up, site.url + "/second", timeouts=SLOWER)
        finally:
            await up.close()
    return first, second


def note(value: str) -> None:
    """``event`` for hypothesis' statistics; nothing outside a hypothesis test."""
    with contextlib.suppress(InvalidArgument):
        event(value)


def check_pair(first: Outcome, second: Outcome) -> None:
    """The second exchange is a fresh, right answer, unless the first was a
    whole, well-formed answer (then its connection may serve again)."""
    note(f"first: {first.kind}" + (f" {type(first.error).__name__}" if first.error else ""))
    assert second.kind == "reply", second
    if first.kind == "reply":
        assert second.body in (b"right", b"reuse"), second
    else:
        assert second.body == b"right", (first, second)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def send_all(data: bytes) -> Script:
    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return script


# -- generated hostile answers ---------------------------------------------

STATUS_LINES = [
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 200",
    b"HTTP/1.0 200 OK",
    b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.1 404 Not Found",
    b"HTTP/1.1 503 Service Unavailable",
    b"HTTP/1.1 999 What",
    b"HTTP/1.1 099 Low",
    b"HTTP/1.1 2x0 OK",
    b"HTTP/1.1 -200 OK",
    b"HTTP/1.1  200 OK",
    b"HTTP/2 200",
    b"HTTP/9.9 200 OK",
    b"ICY 200 OK",
    b"RTSP/1.0 200 OK",
    b"http/1.1 200 ok",
    b"HTTP/1.1 200 OK\x00",
    b"",
]
HEADERS = [
    b"content-length: 0",
    b"content-length: 2",
    b"content-length: 5",
    b"content-length: 99999999999999999999999",
    b"content-length: -1",
    b"content-length: +5",
    b"content-length: 2, 2",
    b"content-length:",
    b"transfer-encoding: chunked",
    b"transfer-encoding: gzip",
    b"transfer-encoding: chunked, gzip",
    b"transfer-encoding: gzip, chunked",
    b"transfer-encoding: identity",
    b"connection: close",
    b"connection: keep-alive",
    b"connection: upgrade",
    b"upgrade: websocket",
    b"x-a: one",
    b" folded continuation",  # obs-fold: continues the previous line
    b"\tfolded with a tab",
    b"no colon at all",
    b"x-b : space before colon",
    b"x-c: a\x00b",
    b"x-d: \xff\xfe latin-1",
    b": empty name",
    b"x-long: " + b"a" * 5000,
]
INTERIM = [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\n",
    b"HTTP/1.1 102 Processing\r\n\r\n",
    b"HTTP/1.1 199 Odd\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n",
]
BODIES = [
    b"",
    b"ok",
    b"okok-more-than-announced",
    b"2\r\nok\r\n0\r\n\r\n",
    b"2\r\nok\r\n0\r\nx-trailer: t\r\n\r\n",
    b"2;ext=1\r\nok\r\n0\r\n\r\n",
    b"zz\r\nok\r\n0\r\n\r\n",
    b"ffffffffffffffffff\r\nok\r\n0\r\n\r\n",
    b"2\r\nokXX0\r\n\r\n",
    b"2\nok\n0\n\n",
    b"-2\r\nok\r\n",
    b"3\r\nok\r\n",
    b"1000\r\n" + b"x" * 100,  # a chunk cut short
]
SMUGGLED = ok(b"smugg")


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        event("answer: random bytes")
        return draw(st.binary(max_size=300))
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"]))
    interim = draw(st.lists(st.sampled_from(INTERIM), max_size=3))
    flood = draw(st.sampled_from([0, 0, 0, 1000]))
    status = draw(st.one_of(st.sampled_from(STATUS_LINES), st.binary(max_size=20)))
    headers = draw(st.lists(st.sampled_from(HEADERS), max_size=5))
    body = draw(st.one_of(st.sampled_from(BODIES), st.binary(max_size=40)))
    data = b"HTTP/1.1 100 Continue\r\n\r\n" * flood + b"".join(interim)
    data += eol.join([status, *headers]) + eol + eol + body
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        event("answer: cut")
        data = data[:cut]
    if draw(st.integers(0, 3)) == 0:
        event("answer: bytes after it")
        data += SMUGGLED
    return data


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(answers(), st.sampled_from(["GET", "GET", "HEAD", "POST"]), st.integers(0, 4))
def test_hostile_answers_end_in_a_reply_or_a_failure(data: bytes, method: str, keep: int) -> None:
    # Mostly the site closes after its answer (fast); one time in five it
    # keeps the connection open, which costs a silence of `total` when the
    # answer is incomplete, and is the case where reuse could go wrong.
    first, second = run(hostile_then_well(send_all(data), method, close_after=keep != 0))
    check_pair(first, second)


# -- fixed hostile answers, named -------------------------------------------

NAMED = {
    "content-length and transfer-encoding": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n"
    ),
    "transfer-encoding and content-length": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n"
    ),
    "two equal content-lengths": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok"
    ),
    "two content-lengths": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\nokabc"
    ),
    "obs-fold": b"HTTP/1.1 200 OK\r\nx-a: one\r\n two\r\ncontent-length: 2\r\n\r\nok",
    "bare LF": b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok",
    "bad status code": b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok",
    "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage",
    "close mid status line": b"HTTP/1.1 20",
    "close mid headers": b"HTTP/1.1 200 OK\r\ncontent-le",
    "close mid body": b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok",
    "close mid chunk": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nok",
    "content-length overflow": (
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n"
    ),
    "switching protocols": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
    "answer then bytes": ok(b"first") + b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsmugg",
    "204 with a body": b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nsmugg",
    "5000 interim answers then the answer": b"HTTP/1.1 100 Continue\r\n\r\n" * 5000 + ok(b"late"),
}


@pytest.mark.parametrize("close_after", [True, False], ids=["then-close", "kept-open"])
@pytest.mark.parametrize("name", list(NAMED))
def test_named_hostile_answers(name: str, close_after: bool) -> None:
    first, second = run(hostile_then_well(send_all(NAMED[name]), close_after=close_after))
    assert first.kind in ("reply", "failure", "read-failure")
    if first.kind != "reply":
        assert isinstance(first.error, (Reset, TimedOut)), first
    check_pair(first, second)


def test_the_outcomes_of_named_answers() -> None:
    """What the client makes of each, as recorded for issue 17."""

    async def main() -> dict[str, str]:
        out = {}
        for name, data in NAMED.items():
            first, _ = await hostile_then_well(send_all(data))
            out[name] = first.kind if first.kind == "reply" else type(first.error).__name__
        return out

    outcomes = run(main())
    assert outcomes["content-length and transfer-encoding"] == "Reset"
    assert outcomes["two content-lengths"] == "Reset"
    assert outcomes["two equal content-lengths"] == "Reset"
    assert outcomes["obs-fold"] == "Reset"
    assert outcomes["bare LF"] == "Reset"
    assert outcomes["5000 interim answers then the answer"] == "reply"


# -- bounds --------------------------------------------------------------------


def endless_chunks(size: int = 16 * 1024, most: int = 4096) -> Script:
    """A chunked body that goes on (up to ``most`` chunks: 64 MiB) while read."""

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%b\r\n" % (size, b"x" * size)
        for _ in range(most):
            writer.write(chunk)
            await writer.drain()

    return script


def test_an_endless_chunked_body_stops_at_the_read_limit() -> None:
    async def main() -> tuple[Outcome, Outcome, int]:
        async with Hostile(endless_chunks(), close_after=False) as site:
            up = HttpUpstream()
            first = await exchange(up, site.url, limit=LIMIT)
            second = await exchange(up, site.url, timeouts=SLOWER)
            await up.close()
            return first, second, site.connections

    first, second, _ = run(main())
    assert first.kind == "read-failure" and isinstance(first.error, BodyTooLarge), first
    assert first.error.limit == LIMIT
    assert second.body == b"right"


def test_an_endless_chunked_body_streamed_stops_when_the_reader_does() -> None:
    async def main() -> tuple[int, Outcome]:
        async with Hostile(endless_chunks(), close_after=False) as site:
            up = HttpUpstream()
            reply = await asyncio.wait_for(up.send("GET", site.url, [], None, FAST), BOUND)
            got = 0
            stream = reply.stream()
            async for part in stream:
                got += len(part)
                if got > 2 * LIMIT:
                    break
            await stream.aclose()  # type: ignore[attr-defined]
            second = await exchange(up, site.url, timeouts=SLOWER)
            await up.close()
            return got, second

    got, second = run(main())
    assert got > 2 * LIMIT
    assert second.body == b"right"


@pytest.mark.parametrize(
    ("framing", "size"),
    [("length", LIMIT), ("length", LIMIT + 1), ("chunked", LIMIT + 1), ("close", LIMIT + 1)],
)
def test_body_bound_is_the_read_limit(framing: str, size: int) -> None:
    body = b"y" * size
    if framing == "length":
        data = ok(body)
    elif framing == "chunked":
        data = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        data += b"%x\r\n%b\r\n0\r\n\r\n" % (size, body)
    else:
        data = b"HTTP/1.0 200 OK\r\n\r\n" + body
    first, second = run(hostile_then_well(send_all(data)))
    if size <= LIMIT:
        assert first.kind == "reply" and first.body == body
    else:
        assert first.kind == "read-failure" and isinstance(first.error, BodyTooLarge), first
    check_pair(first, second)


@pytest.mark.parametrize(
    "head",
    [
        b"x-big: " + b"a" * (8 << 20),  # one header of 8 MiB
        b"\r\n".join([b"x-h: aaaaaaaaaaaaaaa"] * 50_000),  # 50 000 headers, 1 MiB
    ],
    ids=["one-8MiB-header", "50000-headers"],
)
def test_header_blocks_past_the_bound_end_the_call(head: bytes) -> None:
    """The bound: a header block over 64 KiB (scoped.h1.MAX_HEAD) ends the
    call as a failure; the next exchange is unharmed."""
    data = b"HTTP/1.1 200 OK\r\n" + head + b"\r\ncontent-length: 2\r\n\r\nok"
    first, second = run(hostile_then_well(send_all(data)))
    assert first.kind == "failure", first
    check_pair(first, second)


def test_a_header_block_at_the_bound_is_taken() -> None:
    data = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (60 << 10) + b"\r\ncontent-length: 2\r\n\r\nok"
    first, second = run(hostile_then_well(send_all(data)))
    assert first.kind == "reply" and first.body == b"ok"
    check_pair(first, second)


# -- findings ------------------------------------------------------------------


def test_a_header_block_past_64_kib_is_refused() -> None:
    data = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (1 << 20) + b"\r\ncontent-length: 2\r\n\r\nok"
    first, second = run(hostile_then_well(send_all(data)))
    assert first.kind == "failure", first
    check_pair(first, second)


def trickle(piece: bytes, first: bytes = b"", every: float = 0.02, most: int = 400) -> Script:
    """``first``, then ``piece`` every ``every`` s (at most ``most`` times: 8 s)."""

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(first)
        for _ in range(most):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(every)

    return script


HANG = (
    "finding (hang): {what} every 20 ms keeps the call going past every "
    "timeout (connect 0.5 s, total 0.3 s here; stopped by the test's 5 s bound). "
    "scoped/h1.py data_received (line 94) sets _last on every byte and "
    "_check_silence (line 331) only fails a silence, so `total` never fires "
    "before the answer's head; meanwhile the call holds its "
    "max_concurrency slot (scoped/upstream.py HttpUpstream.send, lines 222-228) "
    "and {memory}. The head of an answer (status line to the end of the final "
    "headers) should come within `total`, or the call end as TimedOut"
)


def test_an_endless_header_block_ends_in_a_failure() -> None:
    first, _ = run(
        hostile_then_well(trickle(b"x-t: 1\r\n", first=b"HTTP/1.1 200 OK\r\n"), close_after=False)
    )
    assert first.kind == "failure"


def test_endless_interim_answers_end_in_a_failure() -> None:
    first, _ = run(hostile_then_well(trickle(b"HTTP/1.1 100 Continue\r\n\r\n"), close_after=False))
    assert first.kind == "failure"
