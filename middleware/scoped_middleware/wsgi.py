"""``scoped`` as a WSGI filter inside a service's own paste pipeline.

In ``api-paste.ini`` (see ``deploy/wsgi/README.md``)::

    [filter:scoped]
    paste.filter_factory = scoped_middleware.wsgi:filter_factory
    config_file = /etc/scoped/scoped.yaml
    service_type = image

and ``scoped`` goes into the pipeline before ``authtoken``. For a service
with no paste pipeline (Keystone is a Flask app), :func:`wrap` does the same
from a WSGI script.

A thin adapter over :class:`scoped.gateway.Gateway`, which holds every policy
(``&``, ``|``, ``?``, merging, headers, error bodies). The filter's config is
the site's YAML with ``backends[service_type]`` set to "the wrapped
application": a plan leaf for this site calls the application in-process, on
the request's own thread (:mod:`scoped_middleware.local`); other sites are
reached over HTTP at their entry URL for the service, marked so they serve the
request themselves. A request that carries no scope at all (no ``X-Scope``, no
token suffix, no hop mark) goes straight into the application.
"""

from __future__ import annotations

import functools
import http
import logging
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scoped_grammar.errors import nearest
from scoped_grammar.services import known_service_names, official_service_type

from scoped.answer import SiteReport
from scoped.carry import HOP_HEADER, SCOPE_HEADER, SITES_HEADER, SUFFIX, TOKEN_HEADERS
from scoped.config import Config, load_config
from scoped.errors import ConfigError
from scoped.gateway import EMPTY, Gateway, applied_scope
from scoped.http import SMALL_BODY, Body, Request, Response, error_response
from scoped.respond import scope_headers
from scoped.tls import NO_PEER, Peer, client_context
from scoped.upstream import HttpUpstream

from .bridge import LoopThread, Worker, current_loop_thread, loop_thread, stop_loop_thread
from .local import LOCAL_URL, ORIGIN, LocalStream, Origin, SiteUpstream, wsgi_path

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["Options", "ScopedFilter", "filter_factory", "parse_options", "shutdown", "wrap"]

LOG = logging.getLogger("scoped.wsgi")


OPTIONS = ("config_file", "service_type", "service_root")

_MARK_ENV = tuple(f"HTTP_{h.upper().replace('-', '_')}" for h in (SCOPE_HEADER, HOP_HEADER))
_TOKEN_ENV = tuple(f"HTTP_{h.upper().replace('-', '_')}" for h in TOKEN_HEADERS)
_SCOPE_HEADERS = (SCOPE_HEADER, SITES_HEADER)


@dataclass(frozen=True)
class Options:
    """The filter's validated options."""

    config: Config
    service_type: str
    """Official service type of the wrapped service (``glance`` -> ``image``)."""
    service_root: str
    """Where the service's unversioned root is in ``SCRIPT_NAME + PATH_INFO``
    (``/image``; empty when the service is at its server's root)."""


def _option_error(name: str, message: str) -> ConfigError:
    return ConfigError(f"scoped filter option {name!r}: {message}")


def parse_options(local_conf: Mapping[str, Any], here: str | None = None) -> Options:
    """Validate the filter's options; :class:`ConfigError` names the option."""
    for key in local_conf:
        if key not in OPTIONS:
            hint = nearest(str(key), OPTIONS)
            also = f"; did you mean {hint[0]!r}?" if hint else ""
            raise _option_error(str(key), f"unknown option (allowed: {', '.join(OPTIONS)}){also}")
    raw_file = local_conf.get("config_file")
    if not isinstance(raw_file, (str, Path)) or not str(raw_file).strip():
        raise _option_error("config_file", "required: the path of the site's scoped YAML file")
    path = Path(str(raw_file).strip())
    if not path.is_absolute() and here:
        path = Path(here) / path  # relative to the paste .ini file
    raw_service = local_conf.get("service_type")
    if not isinstance(raw_service, str) or not raw_service.strip():
        raise _option_error(
            "service_type", "required: the service this pipeline serves (image, compute, ...)"
        )
    service = official_service_type(raw_service.strip())
    if service is None:
        hint = nearest(raw_service.strip(), known_service_names())
        also = f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
        raise _option_error("service_type", f"unknown service type {raw_service.strip()!r}{also}")
    try:
        config = load_config(path)
    except ConfigError as err:  # it names the file and the key at fault
        raise _option_error("config_file", str(err)) from None
    root = _service_root(config, service, local_conf.get("service_root"))
    return Options(config, service, root)


def _service_root(config: Config, service: str, given: Any) -> str:
    if given is not None:
        text = str(given).strip()
        if text and not text.startswith("/"):
            raise _option_error("service_root", f"a path starting with '/', got {text!r}")
        return text.rstrip("/")
    url = config.local.endpoints.get(service)
    return urlsplit(url).path.rstrip("/") if url else ""


def _check_threads() -> None:
    """The filter needs real threads: refuse an eventlet-patched process
    rather than deadlock in it."""
    eventlet = sys.modules.get("eventlet")
    patcher = getattr(eventlet, "patcher", None)
    if patcher is not None and patcher.is_monkey_patched("thread"):
        raise ConfigError(
            "the scoped filter needs real threads, but this process is monkey-patched by "
            "eventlet; run the API under uwsgi or mod_wsgi (as current releases do)"
        )


_FILTERS: weakref.WeakSet[ScopedFilter] = weakref.WeakSet()


class ScopedFilter:
    """The WSGI middleware: one service's requests, sent where their scope says."""

    def __init__(self, app: WSGIApplication, options: Options) -> None:
        self.app = app
        self.options = options
        self.service = options.service_type
        self.root = options.service_root
        backends = {**options.config.backends, self.service: LOCAL_URL}
        self.config = replace(options.config, backends=backends)
        self.local = self.config.site
        # What the gateway applies to a request without a scope:
        # every service at this site.
        self.applied = applied_scope(EMPTY, self.local)
        self._state: tuple[LoopThread, Gateway] | None = None
        self._lock = threading.Lock()
        client_context(self.config.tls, self.config.source)  # a bad file fails now
        Gateway(self.config, SiteUpstream(app, HttpUpstream(1)))  # fails now, not later
        _FILTERS.add(self)

    # --- per process ---------------------------------------------------------

    def _gateway(self) -> tuple[LoopThread, Gateway]:
        lt = loop_thread()
        state = self._state
        if state is not None and state[0] is lt:
            return state
        with self._lock:
            state = self._state
            if state is None or state[0] is not lt:
                # A new process (fork) or loop: a gateway whose client
                # belongs to this loop.
                remote = HttpUpstream(
                    self.config.limits.max_concurrency,
                    client_context(self.config.tls, self.config.source),
                )
                gateway = Gateway(self.config, SiteUpstream(self.app, remote))
                # Its background work (health probes, catalog discovery) runs
                # on this process's loop, like everything else.
                lt.run(gateway.start())
                state = (lt, gateway)
                self._state = state
            return state

    @property
    def gateway(self) -> Gateway:
        return self._gateway()[1]

    def close(self) -> None:
        """Close this filter's HTTP client (its pooled connections)."""
        state, self._state = self._state, None
        if state is not None and state[0].alive:
            state[0].run(state[1].close())

    # --- requests ------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if _unscoped(environ):
            return self._direct(environ, start_response)
        return self._scoped(environ, start_response)

    def _direct(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """No scope: straight into the application, with the headers the
        gateway would add (``X-Scope``, ``X-Scope-Sites: <here>=STATUS;t=MS``)."""
        began = time.perf_counter()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            ms = (time.perf_counter() - began) * 1000
            report = SiteReport(self.local, status.split(" ", 1)[0], ms)
            kept = [(k, v) for k, v in headers if k.lower() not in _SCOPE_HEADERS]
            kept.extend(scope_headers(self.applied, (report,)))
            return start_response(status, kept, exc_info)

        return self.app(environ, start)

    def _scoped(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        full = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        root = self.root
        if root and not (full == root or full.startswith(root + "/")):
            resp = error_response(
                404,
                f"scoped: {wsgi_path(full)!r} is outside the root {root!r} of the "
                f"{self.service} service (the filter's service_root)",
            )
            resp.headers.extend(scope_headers(self.applied, ()))
            assert isinstance(resp.body, bytes)
            return _start(resp, start_response, [resp.body], None)
        lt, gateway = self._gateway()
        worker = Worker(lt)
        try:
            path = wsgi_path(full[len(root) :] or "/")
            origin = Origin(worker, environ, root, path)
            req = Request(
                method=environ["REQUEST_METHOD"],
                service=self.service,
                path=path,
                query=environ.get("QUERY_STRING", ""),
                headers=_headers(environ),
                entry_url=_host_url(environ) + wsgi_path(root),
                body=_body(environ, worker),
                peer=_peer(environ),
            )
            resp = worker.run(_handle(gateway, origin, req))
        except BaseException:
            worker.finish()
            raise
        if isinstance(resp.body, bytes):
            worker.finish()
            return _start(resp, start_response, [resp.body], None)
        return _start(resp, start_response, _Streamed(worker, resp), worker)


async def _handle(gateway: Gateway, origin: Origin, req: Request) -> Response:
    ORIGIN.set(origin)  # this task's context: the core's subtasks inherit it
    return await gateway.handle(req)


def _unscoped(environ: WSGIEnvironment) -> bool:
    """None of the headers the core takes a scope from (scoped.carry names
    them): no ``X-Scope``, no hop mark, no token with a suffix."""
    if any(key in environ for key in _MARK_ENV):
        return False
    return not any(SUFFIX in environ.get(key, "") for key in _TOKEN_ENV)


def _peer(environ: WSGIEnvironment) -> Peer:
    """The client's connection as a TLS-terminating WSGI server saw it:
    Apache's mod_ssl says ``HTTPS=on`` and, with ``SSLOptions +StdEnvVars``,
    the client certificate it verified (``SSL_CLIENT_VERIFY=SUCCESS``,
    ``SSL_CLIENT_S_DN`` in RFC 2253 form). No client can set these: its
    headers arrive as ``HTTP_*``. ``wsgi.url_scheme`` is no proof of TLS (a
    proxy-headers middleware sets it from ``X-Forwarded-Proto``)."""
    if str(environ.get("HTTPS", "")).lower() not in ("on", "1"):
        return NO_PEER
    subject = environ.get("SSL_CLIENT_S_DN")
    verified = environ.get("SSL_CLIENT_VERIFY") == "SUCCESS"
    return Peer(tls=True, subject=subject if verified and subject else None)


def _headers(environ: WSGIEnvironment) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out.append((key[5:].replace("_", "-").lower(), value))
    ctype = environ.get("CONTENT_TYPE")
    if ctype:
        out.append(("content-type", ctype))
    length = environ.get("CONTENT_LENGTH")
    if length:
        out.append(("content-length", length))
    return tuple(out)


def _host_url(environ: WSGIEnvironment) -> str:
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "localhost")
        port = str(environ.get("SERVER_PORT", ""))
        if port and port != ("443" if scheme == "https" else "80"):
            host = f"{host}:{port}"
    return f"{scheme}://{host}"


def _body(environ: WSGIEnvironment, worker: Worker) -> Body:
    stream = environ.get("wsgi.input")
    text = environ.get("CONTENT_LENGTH") or ""
    if stream is None:
        return Body(b"")
    if text:
        try:
            length = int(text)
        except ValueError:
            return Body(b"")  # the application will say what is wrong with it
        if length <= 0:
            return Body(b"")
        if length <= SMALL_BODY:
            return Body(_read_exactly(stream, length))
        return Body(None, _input_stream(worker, stream, length), length)
    if environ.get("wsgi.input_terminated"):
        return Body(None, _input_stream(worker, stream, None), None)
    return Body(b"")  # PEP 3333: no Content-Length, no body


def _read_exactly(stream: Any, length: int) -> bytes:
    parts: list[bytes] = []
    left = length
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


async def _input_stream(worker: Worker, stream: Any, length: int | None) -> AsyncIterator[bytes]:
    """The client's body, read on the request thread as the core pulls it."""
    left = length
    while left is None or left > 0:
        size = SMALL_BODY if left is None else min(SMALL_BODY, left)
        chunk: bytes = await worker.call(functools.partial(stream.read, size))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _start(
    resp: Response,
    start_response: StartResponse,
    body: Iterable[bytes],
    worker: Worker | None,
) -> Iterable[bytes]:
    try:
        start_response(f"{resp.status} {_reason(resp.status)}", list(resp.headers))
    except BaseException:
        close = getattr(body, "close", None)
        if close is not None:
            close()
        elif worker is not None:
            worker.finish()
        raise
    return body


class _Streamed:
    """A streamed answer, pulled chunk by chunk from the WSGI server's thread."""

    def __init__(self, worker: Worker, resp: Response) -> None:
        self._worker = worker
        self._resp = resp

    def __iter__(self) -> Iterator[bytes]:
        body = self._resp.body
        if isinstance(body, LocalStream):
            # This site's application, answering alone: its iterable is
            # pulled right here, on the thread it would run on anyway.
            reply = body.reply
            while (chunk := reply.next_chunk()) is not None:
                yield chunk
            return
        assert not isinstance(body, bytes)
        while True:
            chunk = self._worker.run(_anext(body))
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        try:
            if self._worker.lt.alive:
                self._worker.run(_close(self._resp))
        except Exception:
            LOG.exception("scoped: closing a streamed answer failed")
        finally:
            self._worker.finish()


async def _anext(body: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await body.__anext__()
    except StopAsyncIteration:
        return None


async def _close(resp: Response) -> None:
    aclose: Callable[[], Any] | None = getattr(resp.body, "aclose", None)
    if aclose is not None:
        await aclose()
    if resp.close is not None:
        result = resp.close()
        if result is not None:
            await result


def filter_factory(
    global_conf: Mapping[str, Any], **local_conf: Any
) -> Callable[[WSGIApplication], ScopedFilter]:
    """``paste.filter_factory``: options are checked here, when the pipeline loads."""
    _check_threads()
    options = parse_options(local_conf, global_conf.get("here"))

    def make(app: WSGIApplication) -> ScopedFilter:
        return ScopedFilter(app, options)

    return make


def wrap(
    app: WSGIApplication,
    *,
    config_file: str | Path,
    service_type: str,
    service_root: str | None = None,
) -> ScopedFilter:
    """The filter around ``app``, for services with no paste pipeline::

    # keystone's WSGI script
    from keystone.wsgi.api import application as keystone
    application = wrap(keystone, config_file="/etc/scoped/scoped.yaml",
                       service_type="identity")
    """
    conf: dict[str, Any] = {"config_file": str(config_file), "service_type": service_type}
    if service_root is not None:
        conf["service_root"] = service_root
    return filter_factory({}, **conf)(app)


def shutdown() -> None:
    """Close every filter's HTTP client and stop this process's loop thread."""
    if current_loop_thread() is not None:
        for f in list(_FILTERS):
            try:
                f.close()
            except Exception:
                LOG.exception("scoped: closing a filter failed")
    stop_loop_thread()
