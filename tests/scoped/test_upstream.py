"""The upstream client (scoped/upstream.py over scoped/h1.py) against real
sockets: small asyncio servers on 127.0.0.1 that answer exactly the bytes a
test needs, including the ones a well-behaved site never sends."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from scoped.config import Timeouts
from scoped.http import BodyTooLarge
from scoped.upstream import Failure, Gate, HttpUpstream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FAST = Timeouts(connect=1.0, total=1.0)


class Site:
    """A scripted HTTP server: counts connections, records requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Site:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        """One request: its head, and its body (by content-length or chunked)."""
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        lower = head.lower()
        body = b""
        if b"content-length:" in lower:
            length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        elif b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        return head, body


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), extra, body)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def keep_answering(site_ref: list[Site], answer: bytes = b"") -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await site_ref[0].read_request(reader)
            writer.write(ok(answer or body))
            await writer.drain()

    return handler


async def with_site(handler_of: Callable[[list[Site]], Handler]) -> Site:
    ref: list[Site] = []
    site = Site(handler_of(ref))
    ref.append(site)
    return site


def test_connections_are_kept_alive_and_reused() -> None:
    async def main() -> tuple[int, list[bytes]]:
        async with await with_site(lambda r: keep_answering(r, b'{"a": 1}')) as site:
            up = HttpUpstream()
            bodies = []
            for _ in range(5):
                reply = await up.send("GET", f"{site.url}/v2.1/servers?x=1", (), None, FAST)
                bodies.append(await reply.read(1024))
            await up.close()
            return site.connections, bodies

    connections, bodies = run(main())
    assert connections == 1
    assert bodies == [b'{"a": 1}'] * 5


@pytest.mark.parametrize(
    ("keep_alive", "connections"),
    [
        (b"", 1),  # nothing said: kept by the pool's own limit
        (b"keep-alive: timeout=30, max=100\r\n", 1),
        (b"Keep-Alive: max=100, timeout=1\r\n", 3),  # closes at 1 s: a second less is 0
        (b"keep-alive: timeout=soon\r\n", 1),  # unreadable: ignored
    ],
)
def test_a_connection_idles_no_longer_than_the_site_said_it_keeps_it(
    keep_alive: bytes, connections: int
) -> None:
    """Apache closes an idle connection after its KeepAliveTimeout (5 s) and
    says so; a POST sent on it as the close crosses it fails and cannot be
    repeated, so the pool reuses it only a second short of that."""

    def answering(site_ref: list[Site]) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await site_ref[0].read_request(reader)
                writer.write(ok(b"{}", keep_alive))
                await writer.drain()

        return handler

    async def main() -> int:
        async with await with_site(answering) as site:
            up = HttpUpstream()
            for _ in range(3):
                reply = await up.send("POST", f"{site.url}/v3/users", (), b"{}", FAST)
                assert await reply.read(1024) == b"{}"
            await up.close()
            return site.connections

    assert run(main()) == connections


def test_the_request_is_sent_as_given() -> None:
    async def main() -> bytes:
        async with await with_site(lambda r: keep_answering(r, b"{}")) as site:
            up = HttpUpstream()
            headers = [("x-auth-token", "tok"), ("x-openstack-request-id", "req-1")]
            reply = await up.send("GET", f"{site.url}/image/v2/images?a=%20b", headers, None, FAST)
            await reply.read(100)
            await up.close()
            return site.requests[0]

    head = run(main())
    port = head.split(b"host: 127.0.0.1:")[1].split(b"\r\n")[0]
    assert head.startswith(b"GET /image/v2/images?a=%20b HTTP/1.1\r\n")
    assert port.isdigit()
    assert b"x-auth-token: tok\r\n" in head
    assert b"x-openstack-request-id: req-1\r\n" in head


def test_a_body_goes_with_its_length_and_a_stream_goes_chunked() -> None:
    async def gen() -> AsyncIterator[bytes]:
        for part in (b"abc", b"", b"defg"):
            yield part

    async def main() -> tuple[bytes, bytes, list[bytes]]:
        async with await with_site(keep_answering) as site:
            up = HttpUpstream()
            a = await (await up.send("PUT", f"{site.url}/x", (), b"hello", FAST)).read(100)
            b = await (await up.send("POST", f"{site.url}/x", (), gen(), FAST)).read(100)
            await up.close()
            return a, b, site.requests

    a, b, heads = run(main())
    assert (a, b) == (b"hello", b"abcdefg")
    assert b"content-length: 5\r\n" in heads[0]
    assert b"transfer-encoding: chunked\r\n" in heads[1]


def test_a_post_without_body_says_its_length_is_zero() -> None:
    async def main() -> bytes:
        async with await with_site(lambda r: keep_answering(r, b"{}")) as site:
            up = HttpUpstream()
            await (await up.send("POST", f"{site.url}/action", (), None, FAST)).read(100)
            await up.close()
            return site.requests[0]

    assert b"content-length: 0\r\n" in run(main())


def test_a_line_break_in_a_header_is_never_sent() -> None:
    async def main() -> int:
        async with await with_site(keep_answering) as site:
            up = HttpUpstream()
            with pytest.raises(Failure) as caught:
                await up.send("GET", f"{site.url}/", [("x-a", "1\r\nx-b: 2")], None, FAST)
            assert caught.value.kind == "error"
            assert not caught.value.sent
            assert "line break" in caught.value.detail
            await up.close()
            return site.connections

    assert run(main()) == 0


def test_head_answers_end_at_their_headers() -> None:
    async def main() -> tuple[int, bytes]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await site.read_request(reader)  # HEAD: length announced, no body
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 12345\r\n\r\n")
            await site.read_request(reader)
            writer.write(ok(b"after"))
            await writer.drain()
            await reader.read()

        site = Site(handler)
        async with site:
            up = HttpUpstream()
            reply = await up.send("HEAD", f"{site.url}/", (), None, FAST)
            assert await reply.read(10) == b""
            after = await (await up.send("GET", f"{site.url}/", (), None, FAST)).read(100)
            await up.close()
            return site.connections, after

    assert run(main()) == (1, b"after")


def test_interim_answers_are_skipped() -> None:
    async def main() -> tuple[int, bytes]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await site.read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final", b"x-final: yes\r\n"))
            await reader.read()

        site = Site(handler)
        async with site:
            up = HttpUpstream()
            reply = await up.send("PUT", f"{site.url}/", (), b"x", FAST)
            assert ("x-final", "yes") in reply.headers
            body = await reply.read(100)
            await up.close()
            return reply.status, body

    assert run(main()) == (200, b"final")


def test_chunked_and_close_delimited_answers() -> None:
    async def main() -> list[bytes]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await site.read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            await site.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
            await writer.drain()

        site = Site(handler)
        async with site:
            up = HttpUpstream()
            out = [await (await up.send("GET", f"{site.url}/", (), None, FAST)).read(100)]
            out.append(await (await up.send("GET", f"{site.url}/", (), None, FAST)).read(100))
            await up.close()
            return out

    assert run(main()) == [b"abcde", b"until the end"]


def test_an_idle_connection_the_site_closed_is_not_used_again() -> None:
    async def main() -> tuple[int, bytes]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await site.read_request(reader)
            writer.write(ok(b"one"))
            await writer.drain()
            if site.connections == 1:
                await asyncio.sleep(0.05)  # then closes, idle, without a word
                return
            await reader.read()

        site = Site(handler)
        async with site:
            up = HttpUpstream()
            await (await up.send("GET", f"{site.url}/", (), None, FAST)).read(100)
            await asyncio.sleep(0.2)
            body = await (await up.send("GET", f"{site.url}/", (), None, FAST)).read(100)
            await up.close()
            return site.connections, body

    assert run(main()) == (2, b"one")


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("PUT", True), ("POST", False)])
def test_a_kept_connection_closed_as_the_request_went_out(method: str, retried: bool) -> None:
    """The race the pool cannot see coming: the site closes a kept connection
    just as a request is written on it, and answers nothing. A request safe
    to repeat goes again on a new connection; a POST is reported, not repeated."""

    async def main() -> tuple[bytes | Failure, int]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await site.read_request(reader)
            writer.write(ok(b"first"))
            await writer.drain()
            await site.read_request(reader)  # the second: closed without answering

        async def second_connection(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await site.read_request(r)
            w.write(ok(b"again"))
            await w.drain()
            await r.read()

        def route(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Awaitable[None]:
            return handler(r, w) if site.connections == 1 else second_connection(r, w)

        site = Site(route)
        async with site:
            up = HttpUpstream()
            await (await up.send(method, f"{site.url}/", (), b"1", FAST)).read(100)
            try:
                got: bytes | Failure = await (
                    await up.send(method, f"{site.url}/", (), b"2", FAST)
                ).read(100)
            except Failure as err:
                got = err
            await up.close()
            return got, site.connections

    got, connections = run(main())
    if retried:
        assert (got, connections) == (b"again", 2)
    else:
        assert isinstance(got, Failure)
        assert (got.kind, got.sent, connections) == ("reset", True, 1)


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (b"", "reset"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", "reset"),
        (b"NOT HTTP AT ALL\r\n\r\n", "reset"),
    ],
)
def test_broken_answers_are_failures_after_sending(answer: bytes, kind: str) -> None:
    async def main() -> Failure:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await site.read_request(reader)
            writer.write(answer)
            await writer.drain()

        site = Site(handler)
        async with site:
            up = HttpUpstream()
            try:
                reply = await up.send("POST", f"{site.url}/", (), b"{}", FAST)
                await reply.read(1000)
            except Failure as err:
                return err
            finally:
                await up.close()
        raise AssertionError("no failure")

    err = run(main())
    assert err.kind == kind
    assert err.sent


def test_a_silent_site_times_out_and_a_slow_but_steady_one_does_not() -> None:
    async def main() -> tuple[Failure, bytes]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            _, body = await site.read_request(reader)
            if body == b"silent":
                await asyncio.sleep(2)
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
            for part in (b"a", b"b", b"c", b"d"):  # 0.6 s in all, 0.15 s silences
                await asyncio.sleep(0.15)
                writer.write(part)
                await writer.drain()

        site = Site(handler)
        t = Timeouts(connect=1.0, total=0.3)
        async with site:
            up = HttpUpstream()
            with pytest.raises(Failure) as caught:
                await up.send("POST", f"{site.url}/", (), b"silent", t)
            steady = await (await up.send("POST", f"{site.url}/", (), b"steady", t)).read(10)
            await up.close()
            return caught.value, steady

    err, steady = run(main())
    assert (err.kind, err.sent) == ("timeout", True)
    assert steady == b"abcd"


def test_refused_is_reported_as_not_sent() -> None:
    async def main() -> Failure:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        up = HttpUpstream()
        with pytest.raises(Failure) as caught:
            await up.send("POST", f"http://127.0.0.1:{port}/", (), b"x", FAST)
        return caught.value

    err = run(main())
    assert (err.kind, err.sent) == ("refused", False)


def test_body_limits_by_length_and_by_counting() -> None:
    async def main() -> list[str]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                _, body = await site.read_request(reader)
                data = b"x" * 5000
                if body == b"big":  # more than is buffered ahead of the reader
                    writer.write(ok(b"x" * (1 << 20)))
                elif body == b"chunked":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                        b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)
                    )
                else:
                    writer.write(ok(data))
                await writer.drain()

        site = Site(handler)
        seen = []
        async with site:
            up = HttpUpstream()
            for how in (b"big", b"chunked"):
                reply = await up.send("POST", f"{site.url}/", (), how, FAST)
                try:
                    await reply.read(1000)
                except BodyTooLarge as err:
                    seen.append(f"{how.decode()}:{err.limit}")
            # An answer refused by its length is closed unread; one refused by
            # counting had arrived whole, so its connection is clean and reused.
            reply = await up.send("POST", f"{site.url}/", (), b"length", FAST)
            assert len(await reply.read(10_000)) == 5000
            await up.close()
        seen.append(str(site.connections))
        return seen

    assert run(main()) == ["big:1000", "chunked:1000", "2"]


def test_an_unread_answer_closes_its_connection_and_a_read_one_is_reused() -> None:
    async def main() -> int:
        async with await with_site(lambda r: keep_answering(r, b"{}")) as site:
            up = HttpUpstream()
            (await up.send("GET", f"{site.url}/", (), None, FAST)).release()  # unread
            await (await up.send("GET", f"{site.url}/", (), None, FAST)).read(10)
            await (await up.send("GET", f"{site.url}/", (), None, FAST)).read(10)
            await up.close()
            return site.connections

    assert run(main()) == 2


def test_an_early_answer_to_a_stream_upload_is_returned() -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"y" * 65536
            await asyncio.sleep(0.001)

    async def main() -> tuple[int, bytes]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            answer = b'{"error": "too large"}'
            writer.write(b"HTTP/1.1 413 Too Large\r\ncontent-length: %d\r\n\r\n" % len(answer))
            writer.write(answer)
            await writer.drain()
            await asyncio.sleep(0.5)

        site = Site(handler)
        async with site:
            up = HttpUpstream()
            headers = [("content-length", str(64 * 65536))]
            reply = await up.send("PUT", f"{site.url}/file", headers, body(), FAST)
            data = await reply.read(100)
            await up.close()
            return reply.status, data

    assert run(main()) == (413, b'{"error": "too large"}')


@pytest.mark.parametrize(
    "url", ["ftp://h/x", "http://user@h/x", "http://h:99999/x", "nourl", "http://h:x/"]
)
def test_urls_it_cannot_call_are_errors(url: str) -> None:
    async def main() -> Failure:
        with pytest.raises(Failure) as caught:
            await HttpUpstream().send("GET", url, (), None, FAST)
        return caught.value

    err = run(main())
    assert err.kind == "error"
    assert not err.sent


def test_a_cancelled_call_never_leaves_its_answer_to_the_next_one() -> None:
    """A caller that gives up mid-answer (its client went away) must not
    leave the rest of that answer on a pooled connection: the next call
    would read it as its own."""

    async def main() -> list[bytes]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                _, body = await site.read_request(reader)
                answer = body * 1_000_000  # 1 MB, sent slowly
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(answer))
                for i in range(0, len(answer), 50_000):
                    writer.write(answer[i : i + 50_000])
                    await writer.drain()
                    await asyncio.sleep(0.005)

        site = Site(handler)
        async with site:
            up = HttpUpstream()
            got = []
            for letter in (b"a", b"b", b"c"):
                reply = await up.send("POST", f"{site.url}/", (), letter, FAST)
                task = asyncio.ensure_future(reply.read(1 << 20))
                await asyncio.sleep(0.01)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                reply = await up.send("POST", f"{site.url}/", (), letter.upper(), FAST)
                got.append((await reply.read(1 << 20))[:3])
            await up.close()
            return got

    assert run(main()) == [b"AAA", b"BBB", b"CCC"]


def test_many_calls_over_connections_that_close_now_and_then() -> None:
    """600 calls, 32 at a time, against a site that ends every third
    connection after an answer (saying so) and drops some idle ones without
    a word: every call gets its own answer, and the pool stays bounded."""

    async def main() -> tuple[int, int, int]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            n = site.connections
            served = 0
            while True:
                idle = 0.02 * (n % 4 + 1) if served else None  # the first is always served
                try:
                    _, body = await asyncio.wait_for(site.read_request(reader), idle)
                except asyncio.TimeoutError:
                    return  # an idle connection dropped silently
                served += 1
                closing = n % 3 == 0 and served == 2
                extra = b"connection: close\r\n" if closing else b""
                writer.write(ok(b"echo:" + body, extra))
                await writer.drain()
                if closing:
                    return

        site = Site(handler)
        async with site:
            up = HttpUpstream()
            wrong = 0

            async def worker(w: int) -> None:
                nonlocal wrong
                for i in range(600 // 32 + 1):
                    body = f"{w}-{i}".encode()
                    reply = await up.send("PUT", f"{site.url}/", (), body, FAST)
                    if await reply.read(100) != b"echo:" + body:
                        wrong += 1
                    await asyncio.sleep(0.001 * (i % 3))

            await asyncio.gather(*(worker(w) for w in range(32)))
            idle = sum(len(o.idle) for o in up._origins.values())
            await up.close()
            return wrong, idle, site.connections

    wrong, idle, connections = run(main())
    assert wrong == 0
    assert idle <= 32
    assert connections > 32  # the site did close connections: they were replaced


def test_past_max_concurrency_a_call_waits_at_most_its_connect_timeout() -> None:
    """max_concurrency bounds the calls awaiting an answer's head: one more
    waits for a place within its connect timeout, then fails as an error
    that says why (nothing was sent); a place freed lets the next one go."""
    release = asyncio.Event()

    async def main() -> tuple[Failure, int, int]:
        sites: list[Site] = []

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await sites[0].read_request(reader)
                await release.wait()
                writer.write(ok(b"done"))
                await writer.drain()

        async with Site(slow) as site:
            sites.append(site)
            up = HttpUpstream(max_concurrency=1)
            first = asyncio.create_task(up.send("GET", site.url + "/a", (), None, FAST))
            await asyncio.sleep(0.05)
            quick = Timeouts(connect=0.1, total=1.0)
            with pytest.raises(Failure) as caught:
                await up.send("GET", site.url + "/b", (), None, quick)
            release.set()
            reply = await first
            assert await reply.read(100) == b"done"
            after = await up.send("GET", site.url + "/c", (), None, FAST)
            status = after.status
            after.release()
            await up.close()
            return caught.value, len(site.requests), status

    err, requests, status = run(main())
    assert (err.kind, err.sent) == ("error", False)
    assert "too many upstream calls in flight" in err.detail
    assert requests == 2, "the call past the bound never reached the site"
    assert status == 200


async def _black_hole_on(port: int) -> tuple[socket.socket, socket.socket]:
    """A listener on ``port`` whose accept queue is full (backlog 0, one
    connection never accepted): Linux drops further SYNs, so a connect times
    out, as across a partition."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(0)
    filler = socket.create_connection(("127.0.0.1", port), timeout=1)
    return listener, filler


@pytest.mark.parametrize("cut", [True, False])
def test_a_kept_connection_that_goes_silent_is_checked_with_a_new_one(cut: bool) -> None:
    """A kept connection whose answer does not begin within the connect
    timeout: if no new connection comes either, the site is cut off and the
    call ends as a timeout now, not after the total timeout; if one comes,
    the site is only slow and its answer is awaited."""

    async def main() -> tuple[object, int]:
        second = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await sites[0].read_request(reader)
            writer.write(ok(b"first"))
            await writer.drain()
            await sites[0].read_request(reader)
            second.set()
            if not cut:
                await asyncio.sleep(0.6)  # slow, longer than the connect timeout
                writer.write(ok(b"slow"))
                await writer.drain()
            await asyncio.sleep(30)

        sites: list[Site] = []
        async with Site(handler) as site:
            sites.append(site)
            port = int(site.url.rsplit(":", 1)[1])
            up = HttpUpstream()
            timeouts = Timeouts(connect=0.3, total=20.0)
            reply = await up.send("GET", site.url + "/a", (), None, timeouts)
            assert await reply.read(100) == b"first"
            held: tuple[socket.socket, socket.socket] | None = None
            assert site.server is not None
            site.server.close()  # the kept connection stays; no new ones are served
            if cut:
                held = await _black_hole_on(port)
            else:
                site.server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
            try:
                got = await up.send("GET", site.url + "/b", (), None, timeouts)
                result: object = await got.read(100)
            except Failure as err:
                result = err
            finally:
                if held is not None:
                    for s in held:
                        s.close()
            await up.close()
            return result, len(site.requests)

    result, requests = run(main())
    assert requests == 2, "the second request went out on the kept connection"
    if cut:
        assert isinstance(result, Failure)
        assert (result.kind, result.sent) == ("timeout", True)
        assert "the site is unreachable" in result.detail
    else:
        assert result == b"slow"


@pytest.mark.parametrize("cut", [True, False])
def test_an_answer_that_stops_midway_is_checked_with_a_new_connection(cut: bool) -> None:
    """A body that stops flowing for longer than the connect timeout: cut
    off (no new connection either) -> the stream breaks off as a timeout
    now, not after the total timeout; only slow -> the rest arrives."""

    async def main() -> object:
        sites: list[Site] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await sites[0].read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nabcd")
            await writer.drain()
            await asyncio.sleep(0.1)
            assert sites[0].server is not None
            sites[0].server.close()  # this connection stays; no new ones are served
            if cut:
                held.extend(await _black_hole_on(port))
                await asyncio.sleep(30)
            else:
                sites[0].server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
                await asyncio.sleep(0.8)
                writer.write(b"efgh")
                await writer.drain()
                await asyncio.sleep(30)

        held: list[socket.socket] = []
        async with Site(handler) as site:
            sites.append(site)
            port = int(site.url.rsplit(":", 1)[1])
            up = HttpUpstream()
            timeouts = Timeouts(connect=0.3, total=20.0)
            try:
                reply = await up.send("GET", site.url + "/big", (), None, timeouts)
                result: object = b"".join([chunk async for chunk in reply.stream()])
            except Failure as err:
                result = err
            finally:
                for s in held:
                    s.close()
            await up.close()
            return result

    result = run(main())
    if cut:
        assert isinstance(result, Failure)
        assert (result.kind, result.sent) == ("timeout", True)
        assert "its answer stopped on this connection" in result.detail
    else:
        assert result == b"abcdefgh"


def test_the_gate_hands_places_over_in_turn_and_loses_none() -> None:
    """Gate (max_concurrency): a freed place goes to the first caller still
    waiting; one that gave up (timed out, cancelled) is passed over, and the
    count of places never drifts."""

    async def main() -> list[str]:
        gate = Gate(1)
        order: list[str] = []
        assert gate.try_enter() and not gate.try_enter()

        async def waits(name: str, timeout: float = 5.0) -> None:
            await gate.enter(timeout)
            order.append(name)

        with pytest.raises(asyncio.TimeoutError):
            await gate.enter(0.01)  # gives up: no place taken
        a = asyncio.create_task(waits("a"))
        b = asyncio.create_task(waits("b"))
        await asyncio.sleep(0)
        a.cancel()  # a gives up while waiting
        await asyncio.gather(a, return_exceptions=True)
        gate.leave()  # to b, the first still waiting
        await b
        assert not gate.try_enter(), "b holds the one place"
        gate.leave()
        assert gate.try_enter(), "b's place came back"
        gate.leave()
        assert (gate.free, len(gate.waiters)) == (1, 0)
        return order

    assert run(main()) == ["b"]


def test_an_answer_read_whole_at_once_or_in_parts_is_the_same() -> None:
    """A small answer that came with its head is taken at once; a large one
    (reading from the site paused meanwhile) in parts; both leave the
    connection clean for the next call."""

    async def main() -> tuple[list[int], int]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                _, body = await site.read_request(reader)
                writer.write(ok(b"s" * 10 if body == b"small" else b"L" * (1 << 20)))
                await writer.drain()

        site = Site(handler)
        sizes = []
        async with site:
            up = HttpUpstream()
            for how in (b"small", b"large", b"small", b"large"):
                reply = await up.send("POST", f"{site.url}/", (), how, FAST)
                await asyncio.sleep(0.05)  # the whole answer arrives (or fills the buffer)
                sizes.append(len(await reply.read(2 << 20)))
            await up.close()
        return sizes, site.connections

    assert run(main()) == ([10, 1 << 20, 10, 1 << 20], 1)


def test_bytes_after_a_whole_answer_end_the_connection() -> None:
    """A site that sends more than the answer (another answer, or the start
    of one): the connection, and what its parser was reading, is not used
    for the next call; an answer that ends cleanly keeps both."""

    async def main() -> tuple[list[bytes], int]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                _, body = await site.read_request(reader)
                extra = b"HTTP/1.1 200 OK\r\ncontent-le" if body == b"extra" else b""
                writer.write(ok(body) + extra)
                await writer.drain()

        site = Site(handler)
        got = []
        async with site:
            up = HttpUpstream()
            for how in (b"one", b"two", b"extra", b"after"):
                reply = await up.send("POST", f"{site.url}/", (), how, FAST)
                await asyncio.sleep(0.05)  # the extra bytes arrive too
                got.append(await reply.read(100))
            await up.close()
        return got, site.connections

    assert run(main()) == ([b"one", b"two", b"extra", b"after"], 2)
