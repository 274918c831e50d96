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
from tests.stock_proxies import HAPROXY, NGINX, stock_haproxy, stock_nginx

N = 300
PER_SITE = 3
STAR = {"X-Scope": "<compute: *>"}


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
    if request.param == "nginx":
        binary = require_binary(NGINX, "nginx-light", "a stock nginx is put in front")
        argv = stock_nginx(folder, port, gateway, binary)
    else:
        binary = require_binary(HAPROXY, "haproxy", "a stock haproxy is put in front")
        argv = stock_haproxy(folder, port, gateway, binary)
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
    binary = require_binary(NGINX, "nginx-light", "a stock nginx is put in front")
    with running(stock_nginx(tmp_path / "run", port, gateway, binary), port):
        marker = "sc1." + "A" * 15000
        resp = httpx.get(f"http://127.0.0.1:{port}/compute/v2.1/servers?marker={marker}")
    assert resp.status_code == 414
