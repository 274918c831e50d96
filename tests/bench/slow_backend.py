"""A JSON backend that answers after a fixed delay (emulated WAN latency).

python slow_backend.py PORT DELAY_SECONDS
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from aiohttp import web


def main() -> None:
    port, delay = int(sys.argv[1]), float(sys.argv[2])
    body = (
        b'{"servers": ['
        + b", ".join(b'{"id": "%d", "name": "vm-%d"}' % (i, i) for i in range(5))
        + b"]}"
    )

    async def answer(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=1024)


if __name__ == "__main__":
    main()
