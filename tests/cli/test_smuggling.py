"""Request smuggling through ``scoped gateway`` (issue 17.2): hostile requests
from a raw socket to the real command (uvicorn with uvloop and httptools), in
front of a site that parses strictly and records every byte it gets on its
kept-alive connections.

Each case checks the three things that make a desync: what the client gets
(a clear 4xx, or the right answer), what the site got (only well-formed
requests the gateway meant to send, framed as their bodies are, never one
hidden in a body), and the next plain request (answered with its own answer,
on the same kept-alive connection when the hostile one completed).
docs/design.md §6 sums up the inputs tried and what was found.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httptools
import pytest
import yaml

from tests.federation import free_port
from tests.standin import LoopThread

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(rb"[\x21-\x7e\x80-\xff]([\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?|")
_REQUEST_LINE = re.compile(rb"([A-Z]+) (/[\x21-\x7e]*) HTTP/1\.1")
_CHUNK_SIZE = re.compile(rb"[0-9a-f]{1,8}\r\n")


@dataclass
class Seen:
    """One request as the site got it."""

    conn: int
    method: str = ""
    target: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    error: str | None = None
    """Why it is not a well-formed HTTP/1.1 request (then the site closed)."""
    cut: bool = False
    """The connection ended inside it (the gateway gave up on it)."""

    def names(self) -> set[str]:
        return {k for k, _ in self.headers}


class StrictSite:
    """A site that accepts only requests as RFC 9112 writes them (CRLF only,
    no obs-fold, one framing, no chunk extensions or trailers), records each
    with the connection it came on, and answers with what it got."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.connections = 0
        self.port = 0

    async def start(self) -> None:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=8 * 1024 * 1024)
        self.port = server.sockets[0].getsockname()[1]

    def since(self, mark: int) -> list[Seen]:
        with self.lock:
            return list(self.seen[mark:])

    def mark(self) -> int:
        with self.lock:
            return len(self.seen)

    def _record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                seen = Seen(conn)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as err:
                    if err.partial:
                        seen.cut, seen.error = True, f"head cut short: {err.partial[:80]!r}"
                        self._record(seen)
                    return
                seen.error = self._parse_head(seen, head[:-4])
                if seen.error is None:
                    try:
                        await self._read_body(seen, reader)
                    except asyncio.IncompleteReadError:
                        seen.cut = True
                self._record(seen)
                if seen.error is not None or seen.cut:
                    return
                answer = json.dumps(
                    {"conn": conn, "target": seen.target, "length": len(seen.body)}
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%b" % (len(answer), answer)
                )
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as err:
            self._record(Seen(conn, error=f"unreadable: {err}"))
        finally:
            writer.close()

    @staticmethod
    def _parse_head(seen: Seen, head: bytes) -> str | None:
        line, *fields = head.split(b"\r\n")
        for text in (line, *fields):
            if b"\n" in text or b"\r" in text or b"\0" in text:
                return f"a bare CR, LF or NUL in {text[:80]!r}"
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            return f"bad request line {line[:80]!r}"
        seen.method, seen.target = match[1].decode(), match[2].decode("latin-1")
        for text in fields:
            name, colon, value = text.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                return f"bad field line {text[:80]!r}"  # obs-fold, space before colon
            value = value.strip(b" \t")
            if not _VALUE.fullmatch(value):
                return f"bad field value {text[:80]!r}"
            seen.headers.append((name.decode().lower(), value.decode("latin-1")))
        lengths = [v for k, v in seen.headers if k == "content-length"]
        codings = [v for k, v in seen.headers if k == "transfer-encoding"]
        if len(lengths) > 1 or (lengths and codings):
            return "more than one framing"
        if lengths and not lengths[0].isdigit():
            return f"bad content-length {lengths[0]!r}"
        if codings and codings != ["chunked"]:
            return f"transfer-encoding {codings!r}"
        return None

    @staticmethod
    async def _read_body(seen: Seen, reader: asyncio.StreamReader) -> None:
        length = next((int(v) for k, v in seen.headers if k == "content-length"), None)
        if length is not None:
            seen.body = await reader.readexactly(length)
            return
        if ("transfer-encoding", "chunked") not in seen.headers:
            return
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            if not _CHUNK_SIZE.fullmatch(size_line):
                seen.error = f"bad chunk size line {size_line[:80]!r}"
                return
            size = int(size_line, 16)
            data = await reader.readexactly(size + 2)
            if data[-2:] != b"\r\n":
                seen.error = "a chunk longer than its size"
                return
            if size == 0:
                break
            parts.append(data[:-2])
        seen.body = b"".join(parts)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        found: dict[str, object] = json.loads(self.body)
        return found


class _Reader:
    """httptools callbacks collecting whole answers."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue: the answer is still to come
            self._headers, self._body = {}, []
            return
        self.answers.append(Answer(status, self._headers, b"".join(self._body)))
        self._headers, self._body = {}, []


def exchange(port: int, raw: bytes, answers: int = 1) -> list[Answer]:
    """Send ``raw`` on a new connection; the answers that came, up to
    ``answers`` of them or until the gateway closed the connection."""
    reader = _Reader()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # closed while we still sent: answer read below
            sock.sendall(raw)
        while len(reader.answers) < answers:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            reader.parser.feed_data(data)
    return reader.answers


@dataclass
class Gateway:
    port: int
    site: StrictSite


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``scoped gateway`` (the command, as deployed) whose compute backend
    is a :class:`StrictSite`."""
    folder = tmp_path_factory.mktemp("smuggling")
    site = StrictSite()
    with LoopThread() as worker:
        worker.call(site.start())
        config = folder / "scoped.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "site": "Berlin",
                    "sites": {"Berlin": {}},
                    "backends": {"compute": f"http://127.0.0.1:{site.port}"},
                }
            )
        )
        port = free_port()
        code = "import sys; from scoped_cli.main import main; sys.exit(main(sys.argv[1:]))"
        argv = ["gateway", "--config", str(config), "--listen", f"127.0.0.1:{port}"]
        with (folder / "stderr").open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-c", code, *argv], stderr=err)
        try:
            for _ in range(400):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert proc.poll() is None, (folder / "stderr").read_text()
                    threading.Event().wait(0.05)
            yield Gateway(port, site)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


POST = b"POST /compute/v2.1/servers HTTP/1.1\r\nHost: gw\r\n"
GET = b"GET /compute/v2.1/servers HTTP/1.1\r\nHost: gw\r\n"
SMUGGLED = b"GET /compute/SMUGGLED HTTP/1.1\r\nHost: gw\r\n\r\n"
"""What a desync would make the site see as a request of its own."""


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks)
    return body + b"0\r\n" + trailer + b"\r\n"


REJECTED: dict[str, bytes] = {
    # CL and TE both present, either order, and duplicate lengths
    "cl.te": POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te.cl": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunked(SMUGGLED),
    "cl.te http/1.0": POST.replace(b"1.1", b"1.0")
    + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    + SMUGGLED,
    "two lengths": POST + b"Content-Length: 5\r\nContent-Length: 50\r\n\r\nhello" + SMUGGLED,
    "two equal lengths": POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "length list": POST + b"Content-Length: 5, 50\r\n\r\nhello" + SMUGGLED,
    "length +5": POST + b"Content-Length: +5\r\n\r\nhello" + SMUGGLED,
    "length -1": POST + b"Content-Length: -1\r\n\r\n" + SMUGGLED,
    # Transfer-Encoding obfuscations
    "te xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n" + chunked(SMUGGLED),
    "te chunked, identity": POST
    + b"Transfer-Encoding: chunked, identity\r\n\r\n"
    + chunked(SMUGGLED),
    "te twice": POST
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    + chunked(b"hello"),
    "te chunked then identity": POST
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"
    + chunked(SMUGGLED),
    "te vertical tab": POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n" + chunked(SMUGGLED),
    "te in obs-fold": POST
    + b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 4\r\n\r\n"
    + chunked(SMUGGLED),
    "te as obs-fold of another": POST
    + b"X-Note: a\r\n Transfer-Encoding: chunked\r\n\r\n"
    + chunked(SMUGGLED),
    "te name space colon": POST
    + b"Transfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n"
    + chunked(SMUGGLED),
    "cl name space colon": POST + b"Content-Length : 5\r\n\r\nhello" + SMUGGLED,
    "name tab colon": GET + b"X-Note\t: a\r\n\r\n",
    "empty name": GET + b": a\r\n\r\n",
    # obs-fold, bare LF, bare CR, NUL, DEL
    "obs-fold": GET + b"X-Note: a\r\n b\r\n\r\n",
    "bare lf": GET.replace(b"\r\n", b"\n") + b"X-Note: a\n\n",
    "bare lf in request line": b"GET /compute/v2.1/servers HTTP/1.1\nHost: gw\r\n\r\n",
    "bare lf with length": POST.replace(b"\r\n", b"\n") + b"Content-Length: 5\n\nhello" + SMUGGLED,
    "bare cr ending": GET + b"X-Note: a\r\r\n\r\n",
    "cr in value": GET + b"X-Note: a\rb\r\n\r\n",
    "nul in value": GET + b"X-Note: a\x00b\r\n\r\n",
    "del in value": GET + b"X-Note: a\x7fb\r\n\r\n",
    # request lines
    "space in target": b"GET /compute/v2.1/ser vers HTTP/1.1\r\nHost: gw\r\n\r\n",
    "connect": b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
}
"""Requests the front end must refuse (400), whatever the site got."""

BAD_CHUNKS: dict[str, bytes] = {
    "chunk size overflow": b"10000000000000005\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk size negative": b"-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk size 0x": b"0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk size space": b"5 \r\nhello\r\n0\r\n\r\n",
    "chunk longer than size": b"3\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk lf only": b"5\nhello\n0\n\n" + SMUGGLED,
    "chunk extension lf": b"5;a\nb\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "length in trailer": b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n" + SMUGGLED,
}
"""Chunked bodies whose framing breaks after a good head: the gateway may
have begun to stream the body to the site; the site must see that request
cut short, never ended as if whole, nor anything after it."""


def _after(gw: Gateway, name: str, used: list[Seen]) -> None:
    """A plain request after a hostile one gets its own answer, and reuses
    the site connection the hostile one completed on (a desynchronised one
    would answer it with a leftover)."""
    target = "/next/" + re.sub(r"[^a-z0-9]+", "-", name)
    mark = gw.site.mark()
    (answer,) = exchange(gw.port, b"GET /compute%s HTTP/1.1\r\nHost: gw\r\n\r\n" % target.encode())
    assert answer.status == 200
    assert answer.json()["target"] == target
    (seen,) = [s for s in gw.site.since(mark) if s.target == target]
    assert seen.error is None and not seen.cut
    completed = [s.conn for s in used if s.error is None and not s.cut]
    if completed:
        assert seen.conn == completed[-1]


def _others(gw: Gateway, mark: int) -> list[Seen]:
    """What the site got since ``mark`` but the plain requests of :func:`_after`
    (read after one: a request the gateway had begun to send has come)."""
    return [s for s in gw.site.since(mark) if not s.target.startswith("/next/")]


def _well_formed(seen: list[Seen]) -> None:
    for s in seen:
        assert s.error is None or s.cut, s.error
        assert "SMUGGLED" not in s.target


@pytest.mark.parametrize("name", list(REJECTED))
def test_a_hostile_request_is_refused_and_the_site_sees_nothing_of_it(
    gateway: Gateway, name: str
) -> None:
    mark = gateway.site.mark()
    answers = exchange(gateway.port, REJECTED[name], answers=2)
    assert [a.status for a in answers] == [400]
    _after(gateway, name, [])
    assert _others(gateway, mark) == []


@pytest.mark.parametrize("name", list(BAD_CHUNKS))
def test_a_body_whose_chunks_break_is_cut_short_at_the_site(gateway: Gateway, name: str) -> None:
    mark = gateway.site.mark()
    raw = POST + b"Transfer-Encoding: chunked\r\n\r\n" + BAD_CHUNKS[name]
    answers = exchange(gateway.port, raw, answers=2)
    assert [a.status for a in answers] == [400]
    _after(gateway, name, [])
    seen = _others(gateway, mark)
    _well_formed(seen)
    assert all(s.cut for s in seen)  # never a whole request


ANSWERED: dict[str, tuple[bytes, list[tuple[str, str, bytes]]]] = {
    "chunked": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"hel", b"lo"),
        [("POST", "/v2.1/servers", b"hello")],
    ),
    "chunked, capitals and tab": (
        POST + b"Transfer-Encoding:\tCHUNKED\r\n\r\n" + chunked(b"hello"),
        [("POST", "/v2.1/servers", b"hello")],
    ),
    "chunk extension": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n",
        [("POST", "/v2.1/servers", b"hello")],
    ),
    "chunked http/1.0": (
        POST.replace(b"1.1", b"1.0") + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"hello"),
        [("POST", "/v2.1/servers", b"hello")],
    ),
    "length with leading zeros": (
        POST + b"Content-Length: 005\r\n\r\nhello",
        [("POST", "/v2.1/servers", b"hello")],
    ),
    "get with a body": (
        GET + b"Content-Length: 5\r\n\r\nhello",
        [("GET", "/v2.1/servers", b"hello")],
    ),
    "absolute-form": (
        b"GET http://elsewhere.example/compute/v2.1/flavors HTTP/1.1\r\nHost: gw\r\n\r\n",
        [("GET", "/v2.1/flavors", b"")],
    ),
    "fragment": (
        b"GET /compute/v2.1/flavors#x HTTP/1.1\r\nHost: gw\r\n\r\n",
        [("GET", "/v2.1/flavors", b"")],
    ),
    "expect 100-continue": (
        POST + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        [("POST", "/v2.1/servers", b"hello")],
    ),
    "obs-text in a value": (GET + b"X-Note: \xe9t\xe9\r\n\r\n", [("GET", "/v2.1/servers", b"")]),
}
"""Requests that are well framed, if unusual: answered, forwarded as one
well-formed request each."""


@pytest.mark.parametrize("name", list(ANSWERED))
def test_an_unusual_but_well_framed_request_is_forwarded_as_one_request(
    gateway: Gateway, name: str
) -> None:
    raw, expected = ANSWERED[name]
    if b" HTTP/1.0\r\n" not in raw:  # uvicorn closes an HTTP/1.0 connection
        # The client's next request on its connection: framed after the body.
        raw += GET + b"Connection: close\r\n\r\n"
        expected = [*expected, ("GET", "/v2.1/servers", b"")]
    mark = gateway.site.mark()
    answers = exchange(gateway.port, raw, answers=3)
    assert [a.status for a in answers] == [200] * len(expected)
    seen = gateway.site.since(mark)
    _well_formed(seen)
    assert [(s.method, s.target, s.body) for s in seen] == expected
    assert [a.json()["target"] for a in answers] == [s.target for s in seen]
    _after(gateway, name, seen)


def test_a_request_pipelined_after_a_body_is_a_request_of_its_own(gateway: Gateway) -> None:
    """A body followed by a request on the client's connection: two requests
    at the site, each framed by its own length, each answered with its own."""
    mark = gateway.site.mark()
    second = b"GET /compute/v2.1/second HTTP/1.1\r\nHost: gw\r\n\r\n"
    raw = POST + b"Content-Length: 5\r\n\r\nhello" + second
    answers = exchange(gateway.port, raw, answers=2)
    assert [(a.status, a.json()["target"]) for a in answers] == [
        (200, "/v2.1/servers"),
        (200, "/v2.1/second"),
    ]
    seen = gateway.site.since(mark)
    _well_formed(seen)
    assert [(s.target, s.body) for s in seen] == [
        ("/v2.1/servers", b"hello"),
        ("/v2.1/second", b""),
    ]
    assert seen[0].conn == seen[1].conn  # one kept-alive connection, in step
    _after(gateway, "pipelined", seen)


# -- findings: each failed before its fix (docs/design.md §6) ------------------


@pytest.mark.parametrize(
    ("name", "raw", "status"),
    [
        ("one long header", GET + b"X-Note: " + b"a" * 100_000 + b"\r\n\r\n", 431),
        ("many headers", GET + b"X-Note: abcdefgh\r\n" * 8000 + b"\r\n", 431),
        ("long target", b"GET /compute/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 414),
    ],
)
def test_a_request_head_is_bounded(gateway: Gateway, name: str, raw: bytes, status: int) -> None:
    """Found: uvicorn's httptools protocol bounds no request head, so a
    client's megabytes of headers were held and sent on to the site. Past
    64 KiB (as a site's answer head, scoped.h1.MAX_HEAD) the client gets
    414/431 and nothing reaches the site."""
    mark = gateway.site.mark()
    answers = exchange(gateway.port, raw)
    assert [a.status for a in answers] == [status]
    _after(gateway, name, [])
    assert _others(gateway, mark) == []


def test_a_head_just_under_the_bound_is_served(gateway: Gateway) -> None:
    mark = gateway.site.mark()
    (answer,) = exchange(gateway.port, GET + b"X-Note: " + b"a" * 60_000 + b"\r\n\r\n")
    assert answer.status == 200
    (seen,) = gateway.site.since(mark)
    assert dict(seen.headers)["x-note"] == "a" * 60_000


def test_trailer_fields_never_become_headers_at_the_site(gateway: Gateway) -> None:
    """Found: uvicorn appends a chunked body's trailer fields to the
    request's headers, so the site got them as headers (when they came in
    the same read as the head: by timing)."""
    mark = gateway.site.mark()
    trailer = b"X-Trailer: evil\r\nX-Auth-Token: other\r\n"
    raw = (
        POST
        + b"X-Auth-Token: mine\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"hello", trailer=trailer)
    )
    (answer,) = exchange(gateway.port, raw)
    assert answer.status == 200
    (seen,) = gateway.site.since(mark)
    assert seen.body == b"hello"
    assert "x-trailer" not in seen.names()
    assert [v for k, v in seen.headers if k == "x-auth-token"] == ["mine"]
    _after(gateway, "trailer", [seen])


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"identity, chunked", b"chunked, chunked"])
def test_a_transfer_coding_other_than_chunked_is_not_implemented(
    gateway: Gateway, coding: bytes
) -> None:
    """Found: with ``gzip, chunked`` the front end undid the chunking only,
    and the site got gzip bytes as the body, labelled as none (RFC 9112
    §6.1: a coding the server does not understand is a 501)."""
    mark = gateway.site.mark()
    raw = POST + b"Transfer-Encoding: " + coding + b"\r\n\r\n" + chunked(b"\x1f\x8bhello")
    (answer,) = exchange(gateway.port, raw)
    assert answer.status in (400, 501)
    if answer.status == 501:
        assert b"chunked" in answer.body
    _after(gateway, coding.decode(), [])
    assert _others(gateway, mark) == []


def test_hop_by_hop_headers_and_those_connection_names_stay_here(gateway: Gateway) -> None:
    """Found: fields named by ``Connection`` (RFC 9110 §7.6.1), such as h2c's
    ``HTTP2-Settings``, were forwarded; the fixed hop-by-hop set was not."""
    mark = gateway.site.mark()
    raw = POST + (
        b"Connection: keep-alive, X-Private, HTTP2-Settings, Content-Length\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Private: p\r\n"
        b"Proxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive\r\n"
        b"Trailer: X-Checksum\r\nX-Public: yes\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answers = exchange(gateway.port, raw + chunked(b"hello"))
    assert [a.status for a in answers] == [200]
    (seen,) = gateway.site.since(mark)
    hop = {"connection", "keep-alive", "te", "upgrade", "http2-settings", "x-private"}
    hop |= {"proxy-authorization", "proxy-connection", "trailer"}
    assert seen.names() & hop == set()
    assert ("x-public", "yes") in seen.headers
    assert seen.body == b"hello"  # framed by the gateway, not by what Connection named
    _after(gateway, "hop headers", [seen])


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 5\r\n\r\nhello", b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"hello")],
)
def test_an_upgrade_with_a_body_is_refused(gateway: Gateway, framing: bytes) -> None:
    """Found: llhttp stops at the head of a request that asks to upgrade the
    connection; uvicorn served it anyway, with an empty body, so the site got
    the POST with ``content-length: 0`` (or with the client's length and no
    body, waiting for bytes that never came)."""
    mark = gateway.site.mark()
    raw = POST + b"Connection: Upgrade\r\nUpgrade: h2c\r\n" + framing + SMUGGLED
    answers = exchange(gateway.port, raw, answers=2)
    assert [a.status for a in answers] == [400]
    assert b"upgrade" in answers[0].body
    _after(gateway, "upgrade with a body", [])
    assert _others(gateway, mark) == []


def test_a_websocket_upgrade_is_answered_as_a_plain_request(gateway: Gateway) -> None:
    """Found: uvicorn took the upgrade, the app (HTTP only) never accepted
    it, and the client got a 500. No OpenStack API behind a gateway speaks
    WebSocket: the request is served as HTTP, without its upgrade."""
    mark = gateway.site.mark()
    raw = GET + (
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    (answer,) = exchange(gateway.port, raw)
    assert answer.status == 200
    (seen,) = gateway.site.since(mark)
    assert {"connection", "upgrade"} & seen.names() == set()
    _after(gateway, "websocket", [seen])
