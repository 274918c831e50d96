"""The gateway served by aiohttp's own HTTP server, for ``scoped gateway
--server aiohttp``: kept as a measured alternative (tests/bench/bench_gateway.py:
it costs more CPU a request than uvicorn or granian). A thin adapter like the
ASGI one; no policy here.
"""

from __future__ import annotations

from aiohttp import web

from scoped.config import Config
from scoped.gateway import Gateway
from scoped.http import SMALL_BODY, Body, Request, Response

_SKIP = frozenset({"content-length", "transfer-encoding", "connection"})


def create_aiohttp_app(config: Config) -> web.Application:
    gateway = Gateway(config)
    registry = gateway.registry

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        path, _, query = raw.partition("?")
        route = registry.route(path)
        if route is None:
            return await _send(request, gateway.own_response(path, request.method))
        service, prefix, rest = route
        headers = tuple(
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.raw_headers
        )
        body = await _body(request)
        req = Request(
            method=request.method,
            service=service,
            path=rest,
            query=query,
            headers=headers,
            entry_url=f"{request.scheme}://{request.host}{prefix}",
            body=body,
        )
        return await _send(request, await gateway.handle(req))

    async def startup(app: web.Application) -> None:
        await gateway.start()

    async def cleanup(app: web.Application) -> None:
        await gateway.close()

    app = web.Application(client_max_size=0)
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _body(request: web.Request) -> Body:
    if not request.body_exists:
        return Body(b"")
    length = request.content_length
    if length is not None and length <= SMALL_BODY:
        return Body(await request.read())
    return Body(None, request.content.iter_chunked(SMALL_BODY), length)


async def _send(request: web.Request, resp: Response) -> web.StreamResponse:
    out = web.StreamResponse(status=resp.status)
    length: str | None = None
    for k, v in resp.headers:
        if k == "content-length":
            length = v
        elif k not in _SKIP:
            out.headers.add(k, v)
    body = resp.body
    if isinstance(body, bytes):
        out.content_length = len(body)
        await out.prepare(request)
        await out.write_eof(body)
        return out
    if length is not None:
        out.content_length = int(length)
    try:
        await out.prepare(request)
        async for chunk in body:
            await out.write(chunk)
        await out.write_eof()
    finally:
        if resp.close is not None:
            result = resp.close()
            if result is not None:
                await result
    return out
