"""A wide fan-out behind a stock nginx and a stock HAProxy (the 1000-sites
issue: both refused it with their default buffers): a ``*`` list over 300
sites and paging through it, every item once, through each proxy with
nothing tuned, the gateway keeping its long markers in memcached.

Real parts on loopback: 300 stand-in compute sites, ``scoped gateway``,
memcached, nginx and haproxy from Debian."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.debian import require_binary
from tests.federation import free_port
from tests.memcached import memcached
from tests.processes import gateway_command, running
from tests.standin import SiteData, make_items, serve_sites_in_thread

N = 300
PER_SITE = 3
STAR = {"X-Scope": "<compute: *>"}


def _nginx(folder: Path, port: int, upstream: int) -> list[str]:
    """Debian's nginx with nothing but a proxy_pass: default buffers
    (large_client_header_buffers 4 8k, proxy_buffer_size one page)."""
    folder.mkdir()
    temp = " ".join(
        f"{kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    (folder / "nginx.conf").write_text(
        f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {temp} uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
    }}
}}
"""
    )
    binary = require_binary("/usr/sbin/nginx", "nginx-light", "a stock nginx is put in front")
    return [binary, "-p", str(folder), "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"]


def _haproxy(folder: Path, port: int, upstream: int) -> list[str]:
    """Debian's haproxy with defaults only (tune.bufsize 16384)."""
    folder.mkdir()
    (folder / "haproxy.cfg").write_text(
        f"""
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend front
    bind 127.0.0.1:{port}
    default_backend gateway
backend gateway
    server gateway 127.0.0.1:{upstream}
"""
    )
    binary = require_binary("/usr/sbin/haproxy", "haproxy", "a stock haproxy is put in front")
    return [binary, "-db", "-f", str(folder / "haproxy.cfg")]


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[list[SiteData], dict[str, str]]]:
    data = [
        SiteData(f"S{i:03d}", servers=make_items("vm", PER_SITE, seed=f"S{i}")) for i in range(N)
    ]
    with serve_sites_in_thread(data) as urls:
        yield data, urls


@pytest.fixture(scope="module")
def gateway(
    sites: tuple[list[SiteData], dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    data, urls = sites
    local = data[0].name
    with memcached() as store:
        config = {
            "site": local,
            "sites": {
                s.name: ({"endpoints": {"compute": urls[s.name]}} if s.name != local else {})
                for s in data
            },
            "backends": {"compute": urls[local]},
            "limits": {"max_fanout": 1000},
            "paging": {"memcached": [store]},
        }
        with gateway_command(tmp_path_factory.mktemp("gateway"), config) as gw:
            yield gw.port


@pytest.fixture(scope="module", params=["nginx", "haproxy"])
def proxy(
    request: pytest.FixtureRequest, gateway: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    folder = tmp_path_factory.mktemp(request.param) / "run"
    argv = (_nginx if request.param == "nginx" else _haproxy)(folder, port, gateway)
    with running(argv, port):
        yield f"http://127.0.0.1:{port}"


def test_a_star_list_over_300_sites_passes_a_stock_proxy(
    proxy: str, sites: tuple[list[SiteData], dict[str, str]]
) -> None:
    resp = httpx.get(f"{proxy}/compute/v2.1/servers", headers=STAR, timeout=60)
    assert resp.status_code == 200, resp.text[:500]
    assert len(resp.json()["servers"]) == N * PER_SITE
    assert len(resp.headers["x-scope-sites"]) < 100  # bounded at any width


def test_paging_through_300_sites_passes_a_stock_proxy_every_item_once(
    proxy: str, sites: tuple[list[SiteData], dict[str, str]]
) -> None:
    data, _ = sites
    path = "/compute/v2.1/servers?limit=100&sort_key=name&sort_dir=asc"
    seen: list[str] = []
    longest = 0
    for _ in range(N * PER_SITE // 100 + 2):
        resp = httpx.get(proxy + path, headers=STAR, timeout=60)
        assert resp.status_code == 200, resp.text[:500]
        body = resp.json()
        seen += [s["id"] for s in body["servers"]]
        links = [x["href"] for x in body.get("servers_links", []) if x["rel"] == "next"]
        if not links:
            break
        parts = urlsplit(links[0])
        path = f"{parts.path}?{parts.query}"  # through the proxy again
        longest = max(longest, len(links[0]))
    assert sorted(seen) == sorted(i["id"] for s in data for i in s.servers)
    assert len(seen) == len(set(seen))
    assert longest < 300  # the marker is in memcached: ~50 bytes a site inline


def test_an_inline_marker_of_300_sites_would_not_pass_nginx(gateway: int, tmp_path: Path) -> None:
    """Why the store: a link carrying 300 sites' positions (~15 KB) is
    refused by a stock nginx before it reaches the gateway."""
    port = free_port()
    with running(_nginx(tmp_path / "run", port, gateway), port):
        marker = "sc1." + "A" * 15000
        resp = httpx.get(f"http://127.0.0.1:{port}/compute/v2.1/servers?marker={marker}")
    assert resp.status_code == 414
