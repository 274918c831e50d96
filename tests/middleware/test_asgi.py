"""The ASGI front end over the core and an in-memory upstream: the scoped
URL (``/scope/<scope>/...``) from the request path to the sites and back."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from scoped_middleware.asgi import GatewayApp

from scoped.carry import attach, encode_scope
from scoped.config import parse_config
from scoped.gateway import Gateway
from scoped.memory import Exchange, MemoryReply, MemoryUpstream, json_reply

CONFIG = {
    "site": "Berlin",
    "sites": {
        "Berlin": {},
        "Denver": {
            "endpoints": {
                "compute": "http://denver.test/compute",
                "identity": "http://denver.test/identity",
            }
        },
    },
    "backends": {"compute": "http://berlin.test/nova", "identity": "http://berlin.test/ks"},
}


def call(app: GatewayApp, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "gw.test", **headers}.items()]
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": raw,
        "scheme": "http",
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], orjson.loads(body) if body else None


def sites() -> tuple[GatewayApp, dict[str, list[Exchange]]]:
    seen: dict[str, list[Exchange]] = {"Berlin": [], "Denver": []}

    def servers(site: str) -> Any:
        async def handler(ex: Exchange) -> MemoryReply:
            seen[site].append(ex)
            if ex.path.endswith("/auth/tokens"):
                catalog = [
                    {"type": "compute", "endpoints": [{"url": "http://gw.test/compute/v2.1"}]},
                    {"type": "identity", "endpoints": [{"url": "http://gw.test/identity/v3"}]},
                ]
                return json_reply(201, {"token": {"catalog": catalog}})
            return json_reply(200, {"servers": [{"id": f"{site}-1", "name": site}]})

        return handler

    upstream = MemoryUpstream(
        {"http://berlin.test": servers("Berlin"), "http://denver.test": servers("Denver")}
    )
    return GatewayApp(Gateway(parse_config(CONFIG, "<test>"), upstream)), seen


def test_a_token_through_a_scoped_url_has_a_scoped_catalog() -> None:
    app, seen = sites()
    prefix = "/scope/" + encode_scope("<nova: Berlin&Denver>")
    status, body = call(app, "POST", prefix + "/identity/v3/auth/tokens", {})
    assert status == 201
    urls = [s["endpoints"][0]["url"] for s in body["token"]["catalog"]]
    assert urls == [f"http://gw.test{prefix}/compute/v2.1", f"http://gw.test{prefix}/identity/v3"]
    (ex,) = seen["Berlin"]
    assert ex.path == "/ks/v3/auth/tokens", "the token is asked of this site's Keystone"


def test_every_call_under_a_scoped_url_has_its_scope() -> None:
    app, seen = sites()
    prefix = "/scope/" + encode_scope("<nova: Berlin&Denver>")
    status, body = call(app, "GET", prefix + "/compute/v2.1/servers", {"X-Auth-Token": "tok"})
    assert status == 200
    assert [s["name"] for s in body["servers"]] == ["Berlin", "Denver"]
    expected = attach("tok", "<compute: Berlin&Denver, *: Berlin>")
    assert seen["Denver"][0].header("x-auth-token") == expected
    assert seen["Denver"][0].path == "/compute/v2.1/servers"


def test_a_bad_scope_in_the_url_is_a_400_that_says_so() -> None:
    app, seen = sites()
    status, body = call(app, "GET", "/scope/%%%/compute/v2.1/servers", {})
    assert status == 400
    assert "base64url" in body["error"]["message"]
    assert seen == {"Berlin": [], "Denver": []}


def test_links_to_this_gateway_keep_the_scoped_prefix() -> None:
    """Keystone configured with its public URL (the gateway's) writes links
    to the gateway without the scoped prefix: they get it."""
    upstream = MemoryUpstream()

    async def keystone(ex: Exchange) -> MemoryReply:
        links = [{"rel": "self", "href": "http://gw.test/identity/v3/"}]
        return json_reply(200, {"version": {"id": "v3.14", "links": links}})

    upstream.handlers["http://berlin.test"] = keystone
    app = GatewayApp(Gateway(parse_config(CONFIG, "<test>"), upstream))
    prefix = "/scope/" + encode_scope("<nova: Denver>")
    status, body = call(app, "GET", prefix + "/identity/v3", {})
    assert status == 200
    assert body["version"]["links"][0]["href"] == f"http://gw.test{prefix}/identity/v3/"
