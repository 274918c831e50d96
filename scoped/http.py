"""Framework-free HTTP values of the core: what a front end hands in
(:class:`Request`) and gets back (:class:`Response`).

Headers are ``(name, value)`` pairs with lower-case names, in order, repeats
allowed, as ASGI and WSGI both give them.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson
from scoped_grammar import Scope

from .errors import BodyTooLarge

if TYPE_CHECKING:
    from .tls import Peer

__all__ = [
    "HOP_BY_HOP",
    "IDEMPOTENT",
    "SMALL_BODY",
    "Body",
    "BodyTooLarge",
    "Request",
    "Response",
    "connection_options_dropped",
    "content_length",
    "error_body",
    "error_response",
    "header",
    "new_request_id",
    "unsupported_coding",
]

Headers = tuple[tuple[str, str], ...]

REQUEST_ID = "x-openstack-request-id"
_REQUEST_ID_FORMAT = re.compile(r"req-[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}")
"""What oslo.middleware accepts as an incoming (global) request id; anything
else is not passed on to the sites."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
"""Headers that describe one connection, never forwarded (RFC 9110 §7.6.1)."""


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods whose repetition has the effect of one request (RFC 9110 §9.2.2)."""

SMALL_BODY = 64 * 1024
"""The one bound under which a body is handled in one piece: a request body
read at once by the front ends (replayable, one upstream write), an upstream
answer read at once by the core (one write to the client, its links
rewritten), a site's error answer kept for the per-site report, the chunk a
streamed body is read by. Larger bodies stream, in constant memory."""


def header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (lower-case), or None."""
    for k, v in headers:
        if k == name:
            return v
    return None


def unsupported_coding(headers: Iterable[tuple[str, str]]) -> str | None:
    """The request's ``Transfer-Encoding`` if it is anything but ``chunked``
    alone, else None. A front end undoes the chunking only: with ``gzip,
    chunked`` a site got gzip bytes as the body, labelled as none (found
    sending hostile requests, tests/cli/test_smuggling.py). RFC 9112 §6.1:
    a coding the server does not understand is a 501."""
    codings = [v.strip().lower() for k, v in headers if k == "transfer-encoding"]
    if not codings or codings == ["chunked"]:
        return None
    return ", ".join(codings)


_FRAMING = frozenset({"content-length", "host"})
"""Never dropped for being named by ``Connection``: the request's framing
(a client naming it must not change where its body ends) and its host."""


def connection_options_dropped(headers: Headers) -> Headers:
    """``headers`` without the fields the ``Connection`` header names: they
    are about the client's connection (RFC 9110 §7.6.1), like h2c's
    ``HTTP2-Settings``; before, they went on to the sites."""
    named: set[str] = set()
    for k, v in headers:
        if k == "connection":
            named.update(token.strip().lower() for token in v.split(","))
    named -= _FRAMING
    if not named:
        return headers
    return tuple((k, v) for k, v in headers if k not in named)


def content_length(headers: Iterable[tuple[str, str]]) -> int | None:
    """The ``Content-Length``, or None if there is none or it is not a number."""
    value = header(headers, "content-length")
    return int(value) if value is not None and value.isdigit() else None


class Body:
    """A request body: held in memory (can go to several sites) or a one-shot
    stream (goes to one site, in constant memory).

    ``started`` tells whether an upstream call began to read a stream: after
    that, the body cannot be sent elsewhere (no failover).
    """

    __slots__ = ("_prefix", "_stream", "data", "length", "started")

    def __init__(
        self,
        data: bytes | None = b"",
        stream: AsyncIterator[bytes] | None = None,
        length: int | None = None,
    ) -> None:
        self.data = data if stream is None else None
        self._stream = stream
        self._prefix: list[bytes] = []
        self.length = len(data) if data is not None and stream is None else length
        self.started = False

    @property
    def replayable(self) -> bool:
        return self.data is not None

    async def buffer(self, limit: int) -> bool:
        """Read a stream into memory if it is at most ``limit`` bytes.

        Returns whether the body is now replayable. A longer stream keeps what
        was read and stays a stream: nothing is lost either way.
        """
        if self._stream is None:
            return True
        if self.length is not None and self.length > limit:
            return False
        size = 0
        async for chunk in self._stream:
            self._prefix.append(chunk)
            size += len(chunk)
            if size > limit:
                return False
        self.data = b"".join(self._prefix)
        self.length = len(self.data)
        self._prefix = []
        self._stream = None
        return True

    def payload(self) -> bytes | AsyncIterator[bytes] | None:
        """What to send upstream: the bytes, or the stream (once)."""
        if self.data is not None:
            return self.data or None
        if self.started:
            raise RuntimeError("a streamed request body can be sent only once")
        return self._chain()

    async def _chain(self) -> AsyncIterator[bytes]:
        # Marked only once the upstream call really pulls from the stream: a
        # call that failed to connect leaves the body whole for the next site.
        self.started = True
        for chunk in self._prefix:
            yield chunk
        self._prefix = []
        if self._stream is not None:
            async for chunk in self._stream:
                yield chunk


@dataclass(frozen=True)
class Request:
    """One request as it reached this gateway, mapped onto a service."""

    method: str
    service: str
    path: str
    """Under the service root: ``/v2.1/servers``."""
    query: str
    """Raw query string, without ``?``."""
    headers: Headers
    entry_url: str
    """This gateway's entry URL for the service (``http://gw:8001/compute``),
    used for links that must lead back here."""
    body: Body = field(default_factory=Body)
    url_scope: str | None = None
    """The scope segment of a scoped URL (``/scope/<this>/...``), still encoded."""
    url_prefix: str = ""
    """``/scope/<scope>`` when the request came through a scoped URL: part of
    ``entry_url``, kept on the links and catalogs the client gets back."""
    peer: Peer | None = None
    """Who sent it, as the front end's server verified the connection (TLS,
    the client certificate's subject); None when the front end cannot tell.
    Decides whether a hop mark is honoured (:func:`scoped.tls.hop_refusal`)."""

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    @property
    def carried(self) -> str | None:
        """The complete scope that travels on with the request's token (set
        by the gateway, :meth:`carry`, when the request named a scope from
        any source): what the receiving site needs to route the calls it
        makes with that token."""
        found: str | None = self.__dict__.get("_carried")
        return found

    def carry(self, scope: str, parsed: Scope | None = None) -> None:
        """Set :attr:`carried` (and :attr:`scope`, the scope as the client
        gave it), once, as the gateway plans the request. Kept in the
        instance's ``__dict__`` like :attr:`request_id`: a second frozen
        Request per request would cost more than everything around it."""
        self.__dict__["_carried"] = scope
        if parsed is not None:
            self.__dict__["_scope"] = parsed

    @property
    def scope(self) -> Scope | None:
        """The scope the client named (not completed), when it named one."""
        found: Scope | None = self.__dict__.get("_scope")
        return found

    def variant(self, **changes: Any) -> Request:
        """This request with some fields changed (a site's own path or body
        in a replicated write), same request id and carried scope."""
        other = replace(self, **changes)
        for key in ("_carried", "_scope"):
            if key in self.__dict__:
                other.__dict__[key] = self.__dict__[key]
        other.__dict__["_request_id"] = self.request_id
        return other

    @property
    def request_id(self) -> str:
        """The client's ``X-OpenStack-Request-Id`` if it is well formed
        (``req-`` and a UUID, as oslo.middleware checks), else one made up for
        this request; every upstream call and every error the gateway answers
        itself carries it, so one id follows the request across sites."""
        # Kept in the instance's __dict__ (a frozen dataclass blocks only
        # __setattr__): functools.cached_property takes a lock on 3.11.
        found: str | None = self.__dict__.get("_request_id")
        if found is None:
            given = self.header(REQUEST_ID)
            if given is None or not _REQUEST_ID_FORMAT.fullmatch(given):
                given = new_request_id()
            found = self.__dict__["_request_id"] = given
        return found

    @property
    def memo(self) -> dict[Any, Any]:
        """Work done once per request and reused by each of its site calls
        (the forwarded headers: :func:`scoped.forward.upstream_headers`),
        kept in the instance's ``__dict__`` like :attr:`request_id`; a
        :meth:`variant` starts with none."""
        found: dict[Any, Any] | None = self.__dict__.get("_memo")
        if found is None:
            found = self.__dict__["_memo"] = {}
        return found

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT


@dataclass
class Response:
    """What the front end sends back: status, headers, and bytes or a stream."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | AsyncIterator[bytes] = b""
    close: Callable[[], Awaitable[None] | None] | None = None


def new_request_id() -> str:
    """``req-`` and a v4 UUID, as OpenStack services make them. From the
    process's PRNG: unique enough for log correlation, without a getrandom()
    system call on every request."""
    h = f"{random.getrandbits(128):032x}"
    variant = "89ab"[int(h[16], 16) & 3]
    return f"req-{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


TITLES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    413: "Request Entity Too Large",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error_body(status: int, message: str, **extra: object) -> bytes:
    """OpenStack's error shape, so the ``openstack`` CLI prints the message."""
    err: dict[str, object] = {
        "code": status,
        "title": TITLES.get(status, "Error"),
        "message": message,
    }
    err.update(extra)
    return orjson.dumps({"error": err})


def error_response(status: int, message: str, **extra: object) -> Response:
    return Response(
        status, [("content-type", "application/json")], error_body(status, message, **extra)
    )
