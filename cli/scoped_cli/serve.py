"""Start a site's gateway under an ASGI (or aiohttp) server.

The servers are imported only here, and only the one asked for: the core
knows none of them, and an install without granian still runs the default.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import logging
import os
import resource
import shutil
import signal
import ssl
import tempfile
from types import ModuleType
from typing import Any

from scoped.config import Config, TlsSettings
from scoped.errors import ConfigError, ScopedError
from scoped.tls import client_cert_mode, reload_certificates, server_context, track, tracked
from scoped.tuning import tune_gc
from scoped.upstream import SERVER_KEEPALIVE

SERVERS = ("uvicorn", "granian", "aiohttp")
"""``--server`` choices; uvicorn (with uvloop and httptools) is the default:
the lowest added latency at one request in flight (README, "Speed")."""


class ServerNotInstalledError(ScopedError):
    """The server asked for is not installed."""


def _import(server: str, module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        package = (err.name or module).split(".")[0]
        raise ServerNotInstalledError(
            f"--server {server}: the {package!r} package is not installed here "
            f"(pip install {package}); --server uvicorn is the default"
        ) from None


LOG = logging.getLogger("scoped.gateway")

WANTED_OPEN_FILES = 65536
"""Open files a gateway asks for: a wide fan-out holds a connection per site
(and a 1024 soft limit, a common default, runs out at a few hundred sites
times a few requests in flight)."""
ENOUGH_OPEN_FILES = 8192
"""Below this (the hard limit allowing no more), the log says to raise it."""


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files towards :data:`WANTED_OPEN_FILES`,
    as far as the hard limit allows; say so when it cannot. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as err:
            LOG.warning("open files limit stays at %d (could not raise it: %s)", soft, err)
    if soft != resource.RLIM_INFINITY and soft < ENOUGH_OPEN_FILES:
        LOG.warning(
            "open files limit is %d (hard limit %d): a wide fan-out may run out; "
            "raise it (ulimit -n, LimitNOFILE=) to %d",
            soft,
            hard,
            WANTED_OPEN_FILES,
        )
    return soft


def serve(
    server: str,
    config: Config,
    config_file: str,
    host: str,
    port: int,
    log_level: str,
    workers: int = 1,
) -> None:
    """Serve ``config``'s gateway on ``host:port`` until stopped, in
    ``workers`` processes (uvicorn's supervisor: one listening socket, a
    worker that dies replaced, SIGHUP a rolling restart)."""
    if workers > 1 and server != "uvicorn":
        raise ConfigError(f"--workers {workers}: several workers are run with --server uvicorn")
    if config.tls.serving and server != "uvicorn":
        raise ConfigError(
            f"{config.source}: tls.cert: HTTPS is served with --server uvicorn only "
            f"(--server {server} would not tell the gateway which site a peer's "
            "certificate names, so no forwarded request could be honoured)"
        )
    server_context(config.tls, config.source)  # a bad file is an error now, not a traceback
    raise_open_files_limit()
    if server == "granian":
        granian = _import(server, "granian")
        _import(server, "uvloop")
        # granian imports the app by name in its worker: the config goes by
        # environment (scoped_middleware.asgi.app_from_env reads it).
        from scoped_middleware.asgi import CONFIG_ENV  # noqa: PLC0415

        os.environ[CONFIG_ENV] = os.path.abspath(config_file)
        granian.Granian(
            "scoped_middleware.asgi:app_from_env",
            factory=True,
            address=host,
            port=port,
            interface="asgi",
            loop="uvloop",
            workers=1,
            websockets=False,
            log_level=log_level,
        ).serve()
        return
    if server == "aiohttp":
        web = _import(server, "aiohttp.web")
        uvloop = _import(server, "uvloop")
        from scoped_middleware.aio import create_aiohttp_app  # noqa: PLC0415

        uvloop.install()
        web.run_app(create_aiohttp_app(config), host=host, port=port, print=None, access_log=None)
        return
    uvicorn = _import(server, "uvicorn")
    from scoped_middleware.asgi import create_app  # noqa: PLC0415

    app = create_app(config) if workers == 1 else None
    tune_gc(len(config.sites))
    options: dict[str, Any] = {
        "loop": "uvloop",
        "lifespan": "on",
        "access_log": False,
        "log_level": log_level,
        "server_header": False,
        # Behind a TLS front door (tls.serve: false), the links a gateway
        # writes name the scheme the client used: X-Forwarded-Proto from
        # loopback only. Anywhere else forwarded headers are not believed.
        "proxy_headers": config.tls.cert is not None and not config.tls.serve,
        "forwarded_allow_ips": "127.0.0.1",
        "date_header": False,
        "timeout_keep_alive": SERVER_KEEPALIVE,  # peers' pools close first
        "http": gateway_protocol(),  # a bounded head, no trailers as headers
        # No WebSocket: no OpenStack API behind a gateway speaks it, and an
        # upgrade uvicorn took was a 500 (the app never accepts one); without
        # it the request is served as HTTP, its Upgrade not forwarded.
        "ws": "none",
    }
    options.update(uvicorn_tls(config.tls))  # over HTTPS, its certificate and CA
    if workers > 1:
        _serve_workers(uvicorn, config_file, host, port, log_level, workers, options)
        return
    server_config = uvicorn.Config(app, host=host, port=port, **options)
    server_config.load()  # builds its SSL context now, to be reloaded with the rest
    if server_config.ssl is not None:
        track(server_config.ssl, config.tls, config.source)
    signal.signal(signal.SIGHUP, _reload_on_hangup)
    uvicorn.Server(server_config).run()


def _serve_workers(
    uvicorn: ModuleType,
    config_file: str,
    host: str,
    port: int,
    log_level: str,
    workers: int,
    options: dict[str, Any],
) -> None:
    """Several worker processes on one listening socket, each a whole
    gateway that imports the app by name (uvicorn spawns them), sharing a
    directory for ``/metrics`` and circuits (scoped/workers.py), removed at
    exit. A certificate is reloaded by the rolling restart SIGHUP makes."""
    from scoped_middleware.asgi import CONFIG_ENV  # noqa: PLC0415

    from scoped.workers import WORKERS_ENV  # noqa: PLC0415

    folder = tempfile.mkdtemp(prefix="scoped-workers-")
    os.environ[CONFIG_ENV] = os.path.abspath(config_file)
    os.environ[WORKERS_ENV] = folder
    options = {
        **options,
        # Imported by name in each worker (a spawned process gets no objects).
        "http": "scoped_cli.serve:GatewayProtocol",
        "factory": True,
        "workers": workers,
        "log_config": _log_config(uvicorn, log_level),
    }
    try:
        uvicorn.run("scoped_middleware.asgi:app_from_env", host=host, port=port, **options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _log_config(uvicorn: ModuleType, level: str) -> dict[str, Any]:
    """uvicorn's logging, and the gateway's own lines as :func:`log_to_stderr`
    writes them: applied again in every worker (it is a dictConfig)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["formatters"]["scoped"] = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    config["handlers"]["scoped"] = {
        "class": "logging.StreamHandler",
        "formatter": "scoped",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["scoped"] = {
        "handlers": ["scoped"],
        "level": level.upper(),
        "propagate": False,
    }
    return dict(config)


def __getattr__(name: str) -> Any:
    if name == "GatewayProtocol":  # uvicorn's workers import the protocol by name
        return gateway_protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _reload_on_hangup(signum: int, frame: object) -> None:
    """SIGHUP: load the certificate, key and CA bundle again from the same
    paths (a renewed certificate, without a restart or a dropped
    connection); a file that does not load leaves the old one in use."""
    errors = reload_certificates()
    for error in errors:
        LOG.error("tls reload (SIGHUP): %s; the previous certificate stays in use", error)
    if not errors:
        LOG.info("tls reload (SIGHUP): %d TLS contexts loaded their files again", tracked())


def uvicorn_tls(tls: TlsSettings) -> dict[str, Any]:
    """uvicorn's options for ``tls``: its certificate, the federation CA to
    verify client certificates (asked for; required with
    ``require_client_cert``), and the HTTP protocol that hands the verified
    peer to the app (:func:`gateway_protocol`). Nothing for plain HTTP. The
    files are read when the server starts: new ones take a restart
    (docs/design.md §8)."""
    if not tls.serving:
        return {}
    return {
        "ssl_certfile": tls.cert,
        "ssl_keyfile": tls.key,
        "ssl_ca_certs": tls.ca,
        "ssl_cert_reqs": client_cert_mode(tls),
        "http": gateway_protocol(),
    }


MAX_REQUEST_HEAD = 64 * 1024
"""Largest request head a client may send: its target, header names and
values (as :data:`scoped.h1.MAX_HEAD` bounds a site's answer). uvicorn's
httptools protocol has no bound of its own: a client's megabytes of headers
were held and sent on to the site (found sending hostile requests,
tests/cli/test_smuggling.py). Past it: 414 (the target) or 431, and the
connection is closed."""


def gateway_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol as a gateway needs it (plain or TLS).

    - The request head is bounded (:data:`MAX_REQUEST_HEAD`).
    - A chunked body's trailer fields are dropped: uvicorn appends them to
      the request's headers, which the app may read after they came (by
      timing), and they went on to the site as headers.
    - A request that asks to upgrade the connection (``Connection:
      upgrade``) and carries a body is refused: llhttp stops at the end of
      its head, so the app got an empty body (a POST went on with
      ``content-length: 0``, or announcing a length it never sent).
    - Over TLS, the ASGI TLS extension (``scope["extensions"]["tls"]``) that
      uvicorn leaves out: the subject of the client certificate its SSL
      context verified, so the gateway can tell a peer site from a client.
      Computed once per connection (after the handshake, when uvicorn's
      protocol is connected); each request's scope gets the same dict.
    """
    import httptools  # noqa: PLC0415
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415

    class Refused(httptools.HttpParserError):
        """Raised in a parser callback: uvicorn answers a parser error itself
        (:meth:`send_400_response`, which says why)."""

    class GatewayHttpToolsProtocol(HttpToolsProtocol):
        tls_extension: dict[object, object] | None = None
        head_bytes = 0
        in_head = False
        refusal: tuple[int, str, str] | None = None
        """Status, title and message of the answer to a request refused here."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.tls_extension = tls_extension(ssl_object)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.head_bytes, self.in_head = 0, True
            if self.tls_extension is not None:
                self.scope["extensions"] = {"tls": self.tls_extension}

        def on_url(self, url: bytes) -> None:
            self._count(len(url), 414, "URI Too Long")
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            if not self.in_head:
                return  # a trailer field
            self._count(len(name) + len(value), 431, "Request Header Fields Too Large")
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self.in_head = False
            if self.parser.should_upgrade() and self._has_body():
                self._refuse(
                    400,
                    "Bad Request",
                    "a request that asks to upgrade the connection cannot carry a body here",
                )
            super().on_headers_complete()

        def _has_body(self) -> bool:
            for name, value in self.headers:
                if name == b"transfer-encoding" or (
                    name == b"content-length" and value.strip() != b"0"
                ):
                    return True
            return False

        def _count(self, size: int, status: int, title: str) -> None:
            self.head_bytes += size
            if self.head_bytes > MAX_REQUEST_HEAD:
                self._refuse(status, title, f"the request's head is over {MAX_REQUEST_HEAD} bytes")

        def _refuse(self, status: int, title: str, message: str) -> None:
            self.refusal = (status, title, message)
            raise Refused

        def send_400_response(self, msg: str) -> None:
            if self.refusal is None:
                super().send_400_response(msg)
                return
            status, title, message = self.refusal
            body = message.encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%b"
                % (status, title.encode(), len(body), body)
            )
            self.transport.close()

    return GatewayHttpToolsProtocol


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[object, object]:
    """The ASGI TLS extension of a connection whose handshake is done.

    ``getpeercert()`` gives a subject only for a certificate the context
    verified (against ``tls.ca``); one that fails verification fails the
    handshake, so ``client_cert_error`` stays None."""
    cert = ssl_object.getpeercert()
    subject = cert.get("subject") if cert else None
    der = ssl_object.getpeercert(binary_form=True)
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": rfc4514(subject) if subject else None,
        "client_cert_error": None,
        "tls_version": None,
        "cipher_suite": None,
    }


_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def rfc4514(subject: Any) -> str:
    """``getpeercert()``'s subject (RDNs, most general first) as an RFC 4514
    string (most specific first, values escaped), as the ASGI TLS extension
    has it: ``((("organizationName", "scoped"),), (("commonName", "Berlin"),))``
    -> ``CN=Berlin,O=scoped``."""
    rdns = []
    for rdn in reversed(subject):
        rdns.append("+".join(f"{_SHORT_NAMES.get(k, k)}={_escape(v)}" for k, v in rdn))
    return ",".join(rdns)


def _escape(value: str) -> str:
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch in '"+,;<>\\' or (i == 0 and ch in "# ") or (i == last and ch == " "):
            out.append("\\" + ch)
        elif ch == "\0":
            out.append("\\00")
        else:
            out.append(ch)
    return "".join(out)


def log_to_stderr(level: str) -> None:
    """The gateway's own log lines (one JSON line per request on ``scoped.request``
    at info, circuit changes at warning) on stderr, at ``--log-level``."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("scoped")
    for old in [h for h in logger.handlers if getattr(h, "scoped_stderr", False)]:
        logger.removeHandler(old)  # called again in one process (tests): one handler
    handler.scoped_stderr = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
