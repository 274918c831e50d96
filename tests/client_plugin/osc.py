"""Helpers for the client tests: run the real ``openstack`` command against real
stand-in sites, optionally behind real scoped gateways, and read what the sites
received.

The federation here differs from :mod:`tests.federation` in one way the client
needs: each gateway's backends are the site's per-service mounts
(``/compute``, ``/image``, ...) and the sites write their links at the gateway
(``public_url``), so the unversioned roots keystoneauth discovers through a
gateway are real version documents, as behind a real deployment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from aiohttp import web
from scoped_middleware.asgi import create_app

from scoped.config import parse_config
from tests.federation import _serve, free_port
from tests.standin import MOUNTS, LoopThread, ReceivedRequest, SiteData, build_app, serve_sites

OPENSTACK = str(Path(sys.executable).parent / "openstack")
"""The venv's real ``openstack`` command (stock python-openstackclient)."""

SERVICES = ("compute", "image", "identity", "network")
FLAVOR = {
    "original_name": "m1.tiny",
    "vcpus": 1,
    "ram": 512,
    "disk": 1,
    "ephemeral": 0,
    "swap": 0,
    "extra_specs": {},
}
"""Nova embeds the flavor in a server (microversion 2.47+); OSC reads it."""

SERVER_FIELDS: dict[str, Any] = {"image": "", "flavor": FLAVOR}
"""What a stand-in server needs for ``openstack server list`` to show it."""

_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def split_token(value: str) -> tuple[str, str | None]:
    """``X-Auth-Token`` -> (bare token, scope text or None), decoded here from
    first principles (unpadded base64url of UTF-8), not with the code under test."""
    token, sep, encoded = value.partition("!scope!")
    if not sep:
        return token, None
    assert _B64URL.fullmatch(encoded), f"not unpadded base64url: {encoded!r}"
    raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    return token, raw.decode("utf-8")


def is_token_request(r: ReceivedRequest) -> bool:
    return r.method == "POST" and r.path.endswith("/v3/auth/tokens")


def authenticated(received: list[ReceivedRequest]) -> list[ReceivedRequest]:
    return [r for r in received if "x-auth-token" in r.headers]


# ------------------------------------------------------------------ the command


def clouds_yaml(path: Path, clouds: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write a clouds.yaml holding ``clouds`` at ``path``."""
    path.write_text(yaml.safe_dump({"clouds": dict(clouds)}, sort_keys=False))
    return path


def cloud(auth_url: str, region: str | None = None, **extra: Any) -> dict[str, Any]:
    """A password cloud for the stand-in Keystone (it takes any credentials)."""
    config: dict[str, Any] = {
        "auth_type": "password",
        "auth": {
            "auth_url": auth_url,
            "username": "demo",
            "password": "secret",
            "project_name": "demo",
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "identity_api_version": "3",
    }
    if region is not None:
        config["region_name"] = region
    config.update(extra)
    return config


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def run_openstack(
    home: Path, clouds_file: Path, *args: str, env: Mapping[str, str] | None = None
) -> Result:
    """Run the real ``openstack`` with a clean environment: HOME and the config
    file in the test's directory, nothing inherited but PATH."""
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "OS_CLIENT_CONFIG_FILE": str(clouds_file),
        "LC_ALL": "C.UTF-8",
        "PYTHONWARNINGS": "ignore",
    }
    environ.update(env or {})
    proc = subprocess.run(
        [OPENSTACK, *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


# ------------------------------------------------------------------ stand-ins


def extra_services(app: web.Application) -> web.Application:
    """Give a stand-in site a block-storage and a placement list (empty), so
    ``openstack volume list`` and openstacksdk's placement proxy get real answers."""

    async def volumes(request: web.Request) -> web.Response:
        return web.json_response({"volumes": []})

    async def providers(request: web.Request) -> web.Response:
        return web.json_response({"resource_providers": []})

    async def placement_root(request: web.Request) -> web.Response:
        # placement's real root document: one version, its microversion range
        version = {
            "id": "v1.0",
            "max_version": "1.39",
            "min_version": "1.0",
            "status": "CURRENT",
            "links": [{"rel": "self", "href": ""}],
        }
        return web.json_response({"versions": [version]})

    app.router.add_get("/placement", placement_root)
    app.router.add_get("/placement/", placement_root)
    app.router.add_get("/volume/v3/volumes/detail", volumes)
    app.router.add_get("/volume/v3/volumes", volumes)
    app.router.add_get("/placement/resource_providers", providers)
    return app


EXTRA_CATALOG = {"block-storage": "/volume/v3", "placement": "/placement"}


@dataclass
class Federation:
    """Stand-in sites, each behind a real gateway (uvicorn, the real ASGI app)."""

    sites: dict[str, SiteData]
    gateways: dict[str, str]
    site_urls: dict[str, str] = field(default_factory=dict)

    def reset(self) -> None:
        for data in self.sites.values():
            data.received.clear()
            data.reset_faults()


@contextlib.contextmanager
def federation(names: tuple[str, ...] = ("Berlin", "Denver")) -> Iterator[Federation]:
    """Sites and their gateways on loopback; only what was started is stopped.

    Every site's Keystone issues a catalog whose compute, image and network
    endpoints are its gateway's (identity stays the Keystone itself: the
    token request goes home, untouched).
    """
    data = {n: SiteData(n) for n in names}
    gateways = {n: f"http://127.0.0.1:{free_port()}" for n in names}
    for n, site in data.items():
        site.public_url = gateways[n]  # links and version documents point at the gateway
        site.catalog = {"network": f"{gateways[n]}/network"}  # the gateway's prefix
    with LoopThread() as worker:
        sites_cm = serve_sites(list(data.values()))
        site_urls = worker.call(sites_cm.__aenter__())
        servers: list[uvicorn.Server] = []
        try:
            for n in names:
                config = {
                    "site": n,
                    "sites": {
                        m: {"endpoints": {s: f"{gateways[m]}/{s}" for s in SERVICES}} for m in names
                    },
                    "backends": {s: f"{site_urls[n]}{MOUNTS[s]}" for s in SERVICES},
                }
                app = create_app(parse_config(config, f"<{n}>"))
                port = int(gateways[n].rsplit(":", 1)[1])
                servers.append(worker.call(_serve(app, port)))
            yield Federation(data, gateways, site_urls)
        finally:
            for server in servers:
                server.should_exit = True
            worker.call(asyncio.sleep(0.3))
            worker.call(sites_cm.__aexit__(None, None, None))


__all__ = [
    "EXTRA_CATALOG",
    "FLAVOR",
    "OPENSTACK",
    "SERVER_FIELDS",
    "Federation",
    "Result",
    "authenticated",
    "build_app",
    "cloud",
    "clouds_yaml",
    "extra_services",
    "federation",
    "is_token_request",
    "run_openstack",
    "split_token",
]
