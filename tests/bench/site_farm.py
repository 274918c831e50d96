"""Many stand-in compute sites in one process: one listening port per site
(each site its own origin, as in a real federation), each answering a Nova
server list after its own delay, sorted and paged by ``limit``/``marker``.

    python site_farm.py PORTS_FILE SPEC

SPEC is a comma-separated list of ``KIND:DELAY_MS`` per site: ``ok:20``
answers after 20 ms, ``silent:0`` accepts and never answers. A site the
benchmark wants refused gets no listener at all (the port stays closed).
Writes the listening ports, one per line, to PORTS_FILE once all listen.
"""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path

import orjson
import uvloop
from aiohttp import web

ITEMS = 5


def app_for(index: int, kind: str, delay: float) -> web.Application:
    servers = [
        {"id": f"{index:05d}-{i:02d}", "name": f"vm-{index:05d}-{i:02d}"} for i in range(ITEMS)
    ]

    async def answer(request: web.Request) -> web.Response:
        if kind == "silent":
            await asyncio.sleep(3600)
        await asyncio.sleep(delay)
        items = sorted(servers, key=lambda s: s["name"])
        marker = request.query.get("marker")
        if marker is not None:
            ids = [s["id"] for s in items]
            items = items[ids.index(marker) + 1 :] if marker in ids else []
        body: dict[str, object] = {"servers": items}
        limit = request.query.get("limit")
        if limit is not None and len(items) > int(limit):
            body["servers"] = items[: int(limit)]
            last = items[int(limit) - 1]["id"]
            href = f"http://{request.host}/v2.1/servers?limit={limit}&marker={last}"
            body["servers_links"] = [{"rel": "next", "href": href}]
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def serve(ports_file: Path, spec: list[tuple[str, float]]) -> None:
    runners = []
    ports = []
    for index, (kind, delay) in enumerate(spec):
        runner = web.AppRunner(app_for(index, kind, delay), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=128)
        await site.start()
        runners.append(runner)
        ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    ports_file.write_text("\n".join(map(str, ports)) + "\n")
    await asyncio.Event().wait()


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ports_file = Path(sys.argv[1])
    spec = []
    for part in sys.argv[2].split(","):
        kind, delay = part.split(":")
        spec.append((kind, float(delay) / 1000))
    uvloop.install()
    asyncio.run(serve(ports_file, spec))


if __name__ == "__main__":
    main()
