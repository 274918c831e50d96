"""The upstream client never puts on the wire a request whose framing and
body disagree (issue 17.2, docs/design.md §6): a streamed body sent as it is
must be exactly as long as the ``Content-Length`` its head announces, else
its excess would reach a kept-alive site as the start of another request.

The front end (tests/cli/test_smuggling.py) makes such a stream rare (uvicorn
frames a body by its length); it happened with an upgrade request whose body
llhttp never read. This holds whatever the front end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from scoped.config import Timeouts
from scoped.errors import CallError, Reset
from scoped.upstream import Failure, HttpUpstream

FAST = Timeouts(connect=1.0, total=1.0)
SMUGGLED = b"DELETE /v2.1/servers/1 HTTP/1.1\r\nhost: site\r\n\r\n"


class Recorder:
    """A site that reads one request by its ``Content-Length``, answers it,
    and keeps every byte each connection brings."""

    def __init__(self) -> None:
        self.received: list[bytearray] = []
        self.url = ""
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Recorder:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = bytearray()
        self.received.append(got)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                got += head
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                got += await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError) as err:
            if isinstance(err, asyncio.IncompleteReadError):
                got += err.partial
        finally:
            writer.close()


async def _stream(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_a_stream_longer_than_its_length_never_sends_the_excess() -> None:
    """Before: the excess went on the wire, a second request at the site."""

    async def main() -> tuple[Failure, list[bytearray], bytes]:
        async with Recorder() as site:
            up = HttpUpstream()
            with pytest.raises(Failure) as failed:
                await up.send(
                    "PUT",
                    f"{site.url}/v2.1/servers/2",
                    [("content-length", "5")],
                    _stream(b"hello", SMUGGLED),
                    FAST,
                )
            reply = await up.send("GET", f"{site.url}/v2.1/servers", (), None, FAST)
            body = await reply.read(100)
            await up.close()
            return failed.value, site.received, body

    err, received, body = asyncio.run(main())
    assert isinstance(err, Reset)
    assert "longer than the 5 bytes its head announces" in err.detail
    assert body == b"ok"
    assert all(b"DELETE" not in got for got in received)
    assert len(received) == 2  # the spoilt connection was not reused


def test_a_stream_shorter_than_its_length_ends_the_exchange_at_once() -> None:
    """Before: the site waited for the rest, and the call for the total
    timeout (a TimedOut); now a Reset naming both lengths, and the next
    request on a new connection is answered by its own answer."""

    async def main() -> tuple[Failure, list[bytearray], bytes]:
        async with Recorder() as site:
            up = HttpUpstream()
            with pytest.raises(Failure) as failed:
                await up.send(
                    "PUT",
                    f"{site.url}/v2.1/servers/2",
                    [("content-length", "10")],
                    _stream(b"hel", b"lo"),
                    FAST,
                )
            reply = await up.send("GET", f"{site.url}/v2.1/servers", (), None, FAST)
            body = await reply.read(100)
            await up.close()
            return failed.value, site.received, body

    err, received, body = asyncio.run(main())
    assert isinstance(err, Reset)
    assert "5 bytes long, where its head announces 10" in err.detail
    assert body == b"ok"
    assert len(received) == 2
    assert received[1].startswith(b"GET /v2.1/servers HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([("content-length", "5"), ("content-length", "50")], _stream),
        ([("content-length", "+5")], _stream),
        ([("content-length", "5, 5")], _stream),
        ([("content-length", "5")], None),  # bytes: the client sets its own length
    ],
)
def test_a_body_with_a_length_that_is_not_one_length_is_not_sent(
    headers: list[tuple[str, str]], body: object
) -> None:
    async def main() -> tuple[Failure, int]:
        async with Recorder() as site:
            up = HttpUpstream()
            payload = _stream(b"hello") if body is not None else b"hello"
            with pytest.raises(Failure) as failed:
                await up.send("PUT", f"{site.url}/v2.1/servers/2", headers, payload, FAST)
            await up.close()
            return failed.value, len(site.received)

    err, connections = asyncio.run(main())
    assert isinstance(err, CallError)
    assert "not sent" in err.detail
    assert connections == 0
