"""The core under aiohttp's own server (``scoped gateway --server aiohttp``):
the same answers as the ASGI front end, on a real server on loopback."""

from __future__ import annotations

import httpx
from scoped_middleware.aio import create_aiohttp_app

from scoped.config import parse_config
from tests.federation import scope_sites
from tests.standin import SiteData, make_items, serve_in_thread


def test_forwards_streams_and_answers_its_own_paths() -> None:
    site = SiteData("Berlin", servers=make_items("b", 2, seed="B"))
    with serve_in_thread(site) as backend:
        config = parse_config(
            {"site": "Berlin", "sites": {"Berlin": {}}, "backends": {"compute": backend}}
        )
        with serve_in_thread(create_aiohttp_app(config)) as gw, httpx.Client(timeout=20) as c:
            listed = c.get(f"{gw}/compute/v2.1/servers", headers={"X-Scope": "<nova: Berlin>"})
            echo = c.post(f"{gw}/compute/echo/x?a=%2F", content=b"z" * 200_000)
            health = c.get(f"{gw}/healthz")
            metrics = c.get(f"{gw}/metrics")
            missing = c.get(f"{gw}/nowhere")
    assert listed.status_code == 200
    assert len(listed.json()["servers"]) == 2
    assert listed.headers["x-scope"] == "<compute: Berlin, *: Berlin>"
    assert scope_sites(listed) == {"Berlin": "200"}
    assert echo.json()["body_length"] == 200_000
    assert site.received[-1].query_string == "a=%2F"
    assert health.json() == {"status": "ok", "site": "Berlin", "sites": {"Berlin": "closed"}}
    assert "scoped_requests_total" in metrics.text
    assert missing.status_code == 404
    assert "/compute" in missing.json()["error"]["message"]
