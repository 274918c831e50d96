"""A federation on loopback: stand-in sites, each behind a real scoped gateway.

Every gateway is the real ASGI app served by uvicorn; sites are the real HTTP
servers of :mod:`tests.standin`. All run on one background event loop, so
tests drive them with a plain synchronous client. One more site, ``Oslo``,
is in every registry but nothing listens there (connection refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from scoped_middleware.asgi import GatewayApp, create_app

from scoped.config import parse_config
from tests.standin import LoopThread, SiteData, serve_sites

SERVICES = ("compute", "image", "identity", "network")
DOWN = "Oslo"


def scope_sites(resp: httpx.Response) -> dict[str, str]:
    """``X-Scope-Sites`` as {site: outcome}; checks the format of every entry
    (``SITE=OUTCOME;t=MILLISECONDS``, docs/design.md §8)."""
    out: dict[str, str] = {}
    for entry in resp.headers["x-scope-sites"].split(", "):
        site, _, rest = entry.partition("=")
        outcome, _, t = rest.partition(";t=")
        assert float(t) >= 0
        out[site] = outcome
    return out


FREE_PORTS = range(30000, 32768)
"""Where tests pick ports to listen on: below the kernel's ephemeral range
(32768-60999), whose ports any outgoing connection may take between our
pick and our bind (the lab, up during the run, makes many), and above the
lab's own fixed ports (links end at 29999)."""
_PICK = random.Random(os.getpid())


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (bounded tries)."""
    for _ in range(200):
        port = _PICK.choice(FREE_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {FREE_PORTS} after 200 tries")


@dataclass
class Federation:
    sites: dict[str, SiteData]
    gateways: dict[str, str]
    """Site name -> its gateway's base URL."""
    apps: dict[str, GatewayApp] = field(default_factory=dict)
    site_urls: dict[str, str] = field(default_factory=dict)
    worker: LoopThread | None = None
    servers: dict[str, uvicorn.Server] = field(default_factory=dict)

    def stop_gateway(self, name: str) -> None:
        """Take a site's gateway off the network (a partition, as seen from others)."""
        assert self.worker is not None
        server = self.servers.pop(name)
        server.should_exit = True
        self.worker.call(_stopped(server))

    def start_gateway(self, name: str) -> None:
        """Bring it back on the same address."""
        assert self.worker is not None
        port = int(self.gateways[name].rsplit(":", 1)[1])
        self.servers[name] = self.worker.call(_serve(self.apps[name], port))

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the federation's loop (where the gateways live)."""
        assert self.worker is not None
        return self.worker.call(coro)

    def url(self, via: str, service: str, path: str) -> str:
        return f"{self.gateways[via]}/{service}{path}"

    def reset(self) -> None:
        for app in self.apps.values():
            app.gateway.circuits.reset()
        for data in self.sites.values():
            data.received.clear()
            data.uploads.clear()
            data.reset_faults()
            for kind in ("servers", "images", "networks", "users"):
                data.collection(kind).clear()


def gateway_config(
    name: str,
    names: tuple[str, ...],
    gateways: dict[str, str],
    backend: str,
    down_port: int,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    sites: dict[str, Any] = {}
    for n in names:
        sites[n] = {
            "endpoints": {s: f"{gateways[n]}/{s}" for s in SERVICES},
            "timeouts": {"connect": 1.0, "total": 2.0},
        }
    sites[DOWN] = {
        "endpoints": {s: f"http://127.0.0.1:{down_port}/{s}" for s in SERVICES},
        "timeouts": {"connect": 1.0, "total": 2.0},
    }
    config: dict[str, Any] = {
        "site": name,
        "sites": sites,
        "backends": {s: backend for s in SERVICES},
    }
    config.update(overrides or {})
    return config


_TASKS: dict[int, asyncio.Task[None]] = {}


async def _serve(app: GatewayApp, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    _TASKS[id(server)] = task
    for _ in range(500):
        if server.started:
            return server
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the gateway on port {port} did not start")


async def _stopped(server: uvicorn.Server) -> None:
    task = _TASKS.pop(id(server))
    await asyncio.wait_for(task, 30)


@contextlib.contextmanager
def federation(
    names: tuple[str, ...] = ("Berlin", "Denver", "Paris"),
    overrides: dict[str, Any] | None = None,
) -> Iterator[Federation]:
    """Start the sites and their gateways; stop exactly those on exit."""
    data = {n: SiteData(n) for n in names}
    down_port = free_port()
    gateways = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    with LoopThread() as worker:
        sites_cm = serve_sites(list(data.values()))
        site_urls = worker.call(sites_cm.__aenter__())
        fed = Federation(data, gateways, site_urls=site_urls, worker=worker)
        try:
            for n in names:
                cfg = gateway_config(n, names, gateways, site_urls[n], down_port, overrides)
                app = create_app(parse_config(cfg, f"<{n}>"))
                fed.apps[n] = app
                port = int(gateways[n].rsplit(":", 1)[1])
                fed.servers[n] = worker.call(_serve(app, port))
            yield fed
        finally:
            for server in fed.servers.values():
                server.should_exit = True
            worker.call(asyncio.sleep(0.3))
            worker.call(sites_cm.__aexit__(None, None, None))
