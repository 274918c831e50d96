"""The local site's plan leaf, served in-process by the wrapped WSGI application.

The core addresses this site's service as ``backends[service]``; the WSGI
filter sets that to :data:`LOCAL_URL`, and :class:`SiteUpstream` sends such
calls to the wrapped application (no HTTP hop) and every other URL to the
core's HTTP client. The application is called on the WSGI thread that serves
the request (see :mod:`scoped_middleware.bridge`), from a copy of the original
environ with the method, path, query, headers and body of the call; its
response iterable is pulled chunk by chunk and always closed (PEP 3333).
"""

from __future__ import annotations

import contextvars
import io
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes

from scoped.config import Timeouts
from scoped.errors import CallError, Reset
from scoped.http import SMALL_BODY, BodyTooLarge, content_length
from scoped.upstream import Reply, Upstream

from .bridge import Worker, WorkerGone

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

LOG = logging.getLogger("scoped.wsgi")

LOCAL_URL = "wsgi-local://app"
"""The backend URL of the filtered service: "call the wrapped application"."""

PATH_SAFE = "/~!$&'()*+,;=:@"
"""Characters left as they are when a WSGI path is quoted (as WebOb does)."""

_CACHE_PREFIXES = ("webob._", "webob.is_body", "paste.parsed_")
"""Environ keys that cache the parsed body or query of the original request."""


@dataclass(frozen=True, slots=True)
class Origin:
    """The WSGI request being served, as the in-process leaf needs it."""

    worker: Worker
    environ: WSGIEnvironment
    root: str
    """Service root, as it appears in ``SCRIPT_NAME + PATH_INFO`` (decoded)."""
    path: str
    """The request path under the root, quoted as the core sees it."""


ORIGIN: contextvars.ContextVar[Origin] = contextvars.ContextVar("scoped_wsgi_origin")
"""Set by the filter in the task that runs the request through the core; the
core's tasks (a fan-out's children) inherit it."""


def wsgi_path(path: str) -> str:
    """A decoded WSGI path (latin-1 text) quoted for a URL."""
    return quote(path.encode("latin-1"), safe=PATH_SAFE)


class SiteUpstream:
    """This site's service in-process; every other site over HTTP."""

    def __init__(self, app: WSGIApplication, remote: Upstream) -> None:
        self.app = app
        self.remote = remote

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        timeouts: Timeouts,
    ) -> Reply:
        if not url.startswith(LOCAL_URL):
            return await self.remote.send(method, url, headers, body, timeouts)
        origin = ORIGIN.get(None)
        if origin is None:
            if method == "GET" and not headers and body is None:
                # The core's health probe of this site (circuit breaker):
                # the application lives in this very process, so it is up.
                return _Up()
            raise CallError("no WSGI request is in progress for an in-process call")
        environ = _environ(origin, method, url[len(LOCAL_URL) :], headers, body)
        try:
            return await origin.worker.call(lambda: _start(self.app, origin.worker, environ))
        except WorkerGone as err:
            raise CallError(str(err)) from None

    async def close(self) -> None:
        await self.remote.close()


def _environ(
    origin: Origin,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | AsyncIterator[bytes] | None,
) -> dict[str, Any]:
    """A copy of the original environ, carrying this call instead."""
    original = origin.environ
    env: dict[str, Any] = {
        k: v
        for k, v in original.items()
        if not (k.startswith("HTTP_") and k != "HTTP_HOST")
        and k not in ("CONTENT_TYPE", "CONTENT_LENGTH", "wsgi.input_terminated")
        and not k.startswith(_CACHE_PREFIXES)
    }
    path, _, query = target.partition("?")
    env["REQUEST_METHOD"] = method
    env["QUERY_STRING"] = query
    if path != origin.path:
        full = origin.root + unquote_to_bytes(path).decode("latin-1")
        script = original.get("SCRIPT_NAME", "")
        if script and (full == script or full.startswith(script + "/")):
            env["PATH_INFO"] = full[len(script) :]
        else:
            env["SCRIPT_NAME"] = origin.root
            env["PATH_INFO"] = full[len(origin.root) :]
    for key in ("REQUEST_URI", "RAW_URI"):
        if key in env:
            uri = wsgi_path(env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", ""))
            env[key] = f"{uri}?{query}" if query else uri
    for name, value in headers:
        if name == "content-type":
            env["CONTENT_TYPE"] = value
        elif name == "content-length":
            env["CONTENT_LENGTH"] = value
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
            if key == "HTTP_HOST":
                continue  # the host the client asked for stays
            env[key] = f"{env[key]},{value}" if key in env else value
    if isinstance(body, bytes):
        env["wsgi.input"] = io.BytesIO(body)
        env["CONTENT_LENGTH"] = str(len(body))
    elif body is None:
        env["wsgi.input"] = io.BytesIO()
        env.pop("CONTENT_LENGTH", None)
    else:
        env["wsgi.input"] = PulledInput(origin.worker, body)
        if "CONTENT_LENGTH" not in env:
            env["wsgi.input_terminated"] = True
    return env


class PulledInput:
    """``wsgi.input`` for the application, fed by a body stream of the core.

    Read on the request thread: each chunk is awaited on the loop (the stream
    may itself read the client's ``wsgi.input`` through this same thread).
    """

    def __init__(self, worker: Worker, stream: AsyncIterator[bytes]) -> None:
        self._worker = worker
        self._stream = stream
        self._buf = bytearray()
        self._eof = False

    def _more(self) -> bool:
        if self._eof:
            return False
        chunk = self._worker.run(_next_chunk(self._stream))
        if chunk is None:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._more():
                pass
            size = len(self._buf)
        while len(self._buf) < size and self._more():
            pass
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        while True:
            cut = self._buf.find(b"\n")
            if cut >= 0:
                return self.read(cut + 1 if limit is None else min(cut + 1, limit))
            if limit is not None and len(self._buf) >= limit:
                return self.read(limit)
            if not self._more():
                return self.read(-1 if limit is None else limit)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


async def _next_chunk(stream: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


def _start(app: WSGIApplication, worker: Worker, environ: dict[str, Any]) -> LocalReply:
    """Call the application (on the request thread) up to its status line."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    written: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        if started and exc_info is None:
            raise AssertionError("start_response called twice without exc_info")
        started[:] = [(status, headers)]
        return written.append

    try:
        result = app(environ, start_response)
    except Exception as err:
        LOG.exception("scoped: the wrapped application failed")
        raise CallError(f"the application raised {type(err).__name__}", sent=True) from None
    reply = LocalReply(worker, result, written)
    worker.at_finish(reply.close_now)
    try:
        while not started:
            chunk = reply.pull()
            if chunk is None:
                break
            reply.pending.append(chunk)
    except BaseException:
        reply.close_now()
        raise
    if not started:
        reply.close_now()
        raise CallError("the application answered without calling start_response", sent=True)
    status, headers = started[0]
    reply.status = int(status.split(" ", 1)[0])
    reply.headers = [(k.lower(), v) for k, v in headers]
    if isinstance(result, (list, tuple)) or _small(reply.headers):
        # In memory already, or small enough that the core reads it at once
        # anyway: read it now, in this same job (no more thread hops).
        reply.drain()
    return reply


def _small(headers: list[tuple[str, str]]) -> bool:
    """Read with the status line: the core inlines a body this small anyway."""
    length = content_length(headers)
    return length is not None and length <= SMALL_BODY


class LocalReply:
    """The wrapped application's answer, its body not yet read."""

    def __init__(self, worker: Worker, result: Iterable[bytes], written: list[bytes]) -> None:
        self.worker = worker
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.pending: list[bytes] = []
        self._result = result
        self._iter: Iterator[bytes] | None = None
        self._written = written
        self._ahead: list[bytes] = []
        self._closed = False
        self._lock = threading.Lock()
        self.drained = False  # the whole body is in pending, the iterable closed

    # --- on the request thread ----------------------------------------------

    def pull(self) -> bytes | None:
        """The next piece of the application's body (None at its end), in the
        order it was made: chunks given to the legacy ``write()`` callable
        come before the chunk the iterable yields after them."""
        while True:
            if self._written:
                return self._written.pop(0)
            if self._ahead:
                return self._ahead.pop(0)
            if self._closed:
                return None
            try:
                if self._iter is None:
                    self._iter = iter(self._result)
                chunk = next(self._iter)
            except StopIteration:
                self._close_iterable()
                continue  # what was written last, if anything
            except Exception as err:
                self.close_now()
                LOG.exception("scoped: the wrapped application failed while answering")
                raise Reset(f"the application raised {type(err).__name__}", sent=True) from None
            if chunk:
                self._ahead.append(chunk)

    def next_chunk(self) -> bytes | None:
        if self.pending:
            return self.pending.pop(0)
        return self.pull()

    def drain(self) -> None:
        """Read the whole body into memory now, and close the iterable."""
        while (chunk := self.pull()) is not None:
            self.pending.append(chunk)
        self.drained = True

    def _take(self, limit: int) -> bytes:
        body = b"".join(self.pending)
        self.pending.clear()
        if len(body) > limit:
            raise BodyTooLarge(limit)
        return body

    def read_all(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        try:
            while (chunk := self.next_chunk()) is not None:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                parts.append(chunk)
        finally:
            self.close_now()
        return b"".join(parts)

    def close_now(self) -> None:
        """Drop what is left of the body; close the application's iterable."""
        self.pending.clear()
        self._ahead.clear()
        self._written.clear()
        self._close_iterable()

    def _close_iterable(self) -> None:
        """Close the application's iterable (PEP 3333), once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        close = getattr(self._result, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                LOG.exception("scoped: closing the application's response failed")

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the Reply protocol (from the loop) ----------------------------------

    async def read(self, limit: int) -> bytes:
        if self.drained:
            return self._take(limit)
        return await self.worker.call(lambda: self.read_all(limit))

    def stream(self) -> LocalStream:
        return LocalStream(self)

    def release(self) -> None:
        if self._closed:  # drained, or done: nothing of the application's left open
            self.pending.clear()
            return
        if self.worker.here or not self.worker.post(self.close_now):
            self.close_now()


class _Up:
    """The answer to a health probe of the in-process application."""

    status = 200
    headers: list[tuple[str, str]] = []  # noqa: RUF012 - never changed

    async def read(self, limit: int) -> bytes:
        return b""

    def stream(self) -> AsyncIterator[bytes]:
        return _empty()

    def release(self) -> None:
        pass


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


class LocalStream:
    """The application's body as the core's async stream; the WSGI side
    recognises it and pulls the iterable directly on the request thread."""

    def __init__(self, reply: LocalReply) -> None:
        self.reply = reply

    def __aiter__(self) -> LocalStream:
        return self

    async def __anext__(self) -> bytes:
        reply = self.reply
        if reply.drained:
            if not reply.pending:
                raise StopAsyncIteration
            return reply.pending.pop(0)
        chunk = await reply.worker.call(reply.next_chunk)
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self.reply.release()
