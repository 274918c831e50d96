"""The gateway as an ASGI application.

Maps the ASGI request onto the service it addresses, hands it to the core
:class:`~scoped.gateway.Gateway`, and streams the answer back. Also answers
``GET /healthz`` and ``GET /metrics`` on the listen address (answered by
the core: :meth:`~scoped.gateway.Gateway.own_response`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from scoped.config import Config
from scoped.errors import ClientDisconnected, Failure
from scoped.gateway import Gateway
from scoped.http import (
    SMALL_BODY,
    Body,
    Request,
    Response,
    connection_options_dropped,
    content_length,
    error_response,
    header,
    unsupported_coding,
)
from scoped.tls import NO_PEER, Peer
from scoped.urlscope import split_scope_path
from scoped.workers import WORKERS_ENV, WorkerShare

LOG = logging.getLogger("scoped.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class GatewayApp:
    """ASGI application serving one site's gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.registry = gateway.registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.gateway.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        url_scope, url_prefix, path = split_scope_path(path)
        route = self.registry.route(path)
        if route is None:
            await _send(send, self.gateway.own_response(path, scope["method"]))
            return
        service, prefix, rest = route
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        coding = unsupported_coding(headers)
        if coding is not None:
            refusal = error_response(
                501, f"Transfer-Encoding {coding!r}: only chunked is understood here"
            )
            refusal.headers.append(("connection", "close"))
            await _send(send, refusal)
            return
        headers = connection_options_dropped(headers)
        try:
            body = await _body(headers, receive)
        except ClientDisconnected:
            return  # gone while sending a small body: nobody to answer
        req = Request(
            method=scope["method"],
            service=service,
            path=rest,
            query=scope["query_string"].decode("latin-1"),
            headers=headers,
            entry_url=_origin(scope, headers) + url_prefix + prefix,
            body=body,
            url_scope=url_scope,
            url_prefix=url_prefix,
            peer=_peer(scope),
        )
        await _send(send, await self.gateway.handle(req))


_HTTPS_NO_CERT = Peer(tls=True)


def _peer(scope: Scope) -> Peer:
    """The connection's verified client certificate, from the ASGI TLS
    extension (``scope["extensions"]["tls"]``; ``scoped gateway`` adds it
    under uvicorn, which does not): its subject if the server verified it.
    Whether that makes a forwarded request honoured is the core's decision
    (:func:`scoped.tls.hop_refusal`)."""
    extensions = scope.get("extensions")
    tls = extensions.get("tls") if extensions else None
    if tls is None:
        return _HTTPS_NO_CERT if scope.get("scheme") == "https" else NO_PEER
    subject = tls.get("client_cert_name")
    if not subject or tls.get("client_cert_error"):
        return _HTTPS_NO_CERT
    return Peer(tls=True, subject=subject)


async def _body(headers: tuple[tuple[str, str], ...], receive: Receive) -> Body:
    length = content_length(headers)
    chunked = header(headers, "transfer-encoding") is not None
    if not chunked and not length:
        return Body(b"")  # no body: its empty message is left unread, which ASGI allows
    if length is not None and length <= SMALL_BODY:
        data = b"".join([chunk async for chunk in _stream(receive)])
        return Body(data)
    return Body(None, _stream(receive), length)


async def _stream(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _origin(scope: Scope, headers: tuple[tuple[str, str], ...]) -> str:
    scheme = scope.get("scheme", "http")
    for k, v in headers:
        if k == "host":
            return f"{scheme}://{v}"
    server = scope.get("server")
    if server:
        return f"{scheme}://{server[0]}:{server[1]}"
    return f"{scheme}://localhost"


async def _send(send: Send, resp: Response) -> None:
    raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers]
    await send({"type": "http.response.start", "status": resp.status, "headers": raw_headers})
    body = resp.body
    if isinstance(body, bytes):
        await send({"type": "http.response.body", "body": body})
        return
    try:
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except Failure as err:
        # The site broke off mid-answer: the status is sent, so the only
        # honest signal left is an incomplete body; the server closes the
        # connection when the app returns without finishing it.
        LOG.warning("an answer broke off while streaming to the client: %s", err)
    finally:
        if resp.close is not None:
            result = resp.close()
            if result is not None:
                await result


def create_app(config: Config, share: WorkerShare | None = None) -> GatewayApp:
    """The ASGI app for a validated config (``share``: one of several workers)."""
    return GatewayApp(Gateway(config, share=share))


CONFIG_ENV = "SCOPED_CONFIG"


def app_from_env() -> GatewayApp:
    """App factory for ASGI servers that import the app by name (granian,
    uvicorn's workers): the config file is named by ``$SCOPED_CONFIG``, the
    directory several workers share by ``$SCOPED_WORKERS_DIR``."""
    import os  # noqa: PLC0415

    from scoped.config import load_config  # noqa: PLC0415
    from scoped.tuning import tune_gc  # noqa: PLC0415

    config = load_config(os.environ[CONFIG_ENV])
    folder = os.environ.get(WORKERS_ENV)  # scoped gateway --workers N
    app = create_app(config, WorkerShare(folder) if folder else None)
    tune_gc(len(config.sites))  # this is the serving process (a worker)
    return app
