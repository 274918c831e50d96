"""A scope in the URL: the path form, the URL printed for it, and the
catalog of a token obtained through it."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from scoped.carry import decode_scope, encode_scope
from scoped.config import parse_config
from scoped.errors import ScopeError
from scoped.gateway import Gateway
from scoped.http import Body, Request
from scoped.memory import Exchange, MemoryReply, MemoryUpstream, json_reply
from scoped.urlscope import rewrite_catalog, rewrite_remote_catalog, scope_url, split_scope_path


def test_the_path_form_splits_into_scope_prefix_and_rest() -> None:
    assert split_scope_path("/scope/abc/identity/v3") == ("abc", "/scope/abc", "/identity/v3")
    assert split_scope_path("/scope/abc") == ("abc", "/scope/abc", "/")
    assert split_scope_path("/identity/v3") == (None, "", "/identity/v3")
    assert split_scope_path("/scoped/x") == (None, "", "/scoped/x")


def test_the_url_carries_the_canonical_scope() -> None:
    url = scope_url("http://gw:18000/", "{nova: Berlin&Denver}")
    assert url.startswith("http://gw:18000/scope/") and url.endswith("/identity/v3")
    segment = split_scope_path(url[len("http://gw:18000") :])[0]
    assert segment is not None and "=" not in segment
    assert decode_scope(segment) == "<compute: Berlin&Denver>"
    with pytest.raises(ScopeError, match="expected"):
        scope_url("http://gw", "<nova: Berlin&>")


def test_the_catalog_points_under_the_scoped_prefix_and_nothing_else_changes() -> None:
    body = orjson.dumps(
        {
            "token": {
                "catalog": [
                    {"type": "compute", "endpoints": [{"url": "http://gw:18000/compute/v2.1"}]},
                    {"type": "image", "endpoints": [{"url": "http://elsewhere:9292"}]},
                ],
                "project": {"name": "http://gw:18000/not-a-link"},
            }
        }
    )
    out = orjson.loads(rewrite_catalog(body, "http://gw:18000", "/scope/abc"))
    endpoints = [s["endpoints"][0]["url"] for s in out["token"]["catalog"]]
    assert endpoints == ["http://gw:18000/scope/abc/compute/v2.1", "http://elsewhere:9292"]
    assert out["token"]["project"]["name"] == "http://gw:18000/not-a-link"
    again = rewrite_catalog(orjson.dumps(out), "http://gw:18000", "/scope/abc")
    assert orjson.loads(again) == out, "a scoped URL is not scoped twice"
    assert rewrite_catalog(b"not json http://gw:18000", "http://gw:18000", "/s") == (
        b"not json http://gw:18000"
    )


def test_another_sites_catalog_points_under_the_scoped_prefix() -> None:
    """A token of Denver's Keystone lists Denver's endpoints, at Denver's
    public host (not the address this gateway reaches Denver at): matched by
    service type and path, they are put under this gateway's scoped prefix."""
    catalog = [
        {"type": "compute", "endpoints": [{"url": "http://denver.pub/compute/v2.1"}]},
        {"type": "volumev3", "endpoints": [{"url": "http://denver.pub/volume/v3/p"}]},
        {"type": "image", "endpoints": [{"url": "http://denver.pub/elsewhere/x"}]},
        {"type": "dns", "endpoints": [{"url": "http://denver.pub/dns"}]},
    ]
    body = orjson.dumps({"token": {"catalog": catalog, "user": {"name": "http://denver.pub"}}})
    routes = {
        "compute": ("/compute", "/nova"),
        "block-storage": ("/volume", "/volume"),
        "image": ("/image", "/image"),
    }
    entry = "http://gw:18000/scope/abc"
    out = orjson.loads(rewrite_remote_catalog(body, entry, routes))
    urls = [s["endpoints"][0]["url"] for s in out["token"]["catalog"]]
    assert urls == [
        f"{entry}/nova/v2.1",
        f"{entry}/volume/v3/p",
        "http://denver.pub/elsewhere/x",  # not under Denver's image entry path
        "http://denver.pub/dns",  # a service this gateway does not serve
    ]
    assert out["token"]["user"] == {"name": "http://denver.pub"}
    again = rewrite_remote_catalog(orjson.dumps(out), entry, routes)
    assert orjson.loads(again) == out, "a scoped URL is not scoped twice"


def test_a_token_of_another_site_through_a_scoped_url_has_a_catalog_of_this_gateway() -> None:
    """``<*: Denver>`` through Berlin's gateway: Denver's Keystone issues the
    token, and its catalog (Denver's public URLs) must lead back to Berlin's
    scoped prefix, or every later call of the client goes to Denver bare."""
    config = parse_config(
        {
            "site": "Berlin",
            "sites": {
                "Berlin": {},
                "Denver": {
                    "endpoints": {
                        "identity": "http://denver.wan/identity",
                        "compute": "http://denver.wan/compute",
                    }
                },
            },
            "backends": {"identity": "http://berlin.test/ks", "compute": "http://berlin.test/n"},
        },
        "<test>",
    )

    async def denver(ex: Exchange) -> MemoryReply:
        catalog = [
            {"type": "compute", "endpoints": [{"url": "http://denver.pub/compute/v2.1"}]},
            {"type": "identity", "endpoints": [{"url": "http://denver.pub/identity/v3"}]},
        ]
        return json_reply(201, {"token": {"catalog": catalog}})

    upstream = MemoryUpstream({"http://denver.wan": denver})
    gateway = Gateway(config, upstream)
    prefix = "/scope/" + encode_scope("<*: Denver>")
    req = Request(
        method="POST",
        service="identity",
        path="/v3/auth/tokens",
        query="",
        headers=(("content-type", "application/json"),),
        entry_url=f"http://gw.test{prefix}/identity",
        body=Body(b"{}"),
        url_scope=prefix[len("/scope/") :],
        url_prefix=prefix,
    )
    resp = asyncio.run(gateway.handle(req))
    assert resp.status == 201
    assert isinstance(resp.body, bytes)
    urls = [s["endpoints"][0]["url"] for s in orjson.loads(resp.body)["token"]["catalog"]]
    assert urls == [
        f"http://gw.test{prefix}/compute/v2.1",
        f"http://gw.test{prefix}/identity/v3",
    ]
    assert [c.path for c in upstream.calls] == ["/identity/v3/auth/tokens"]


def test_links_a_site_writes_with_its_public_url_lead_back_here() -> None:
    """Denver's Nova writes its links with Denver's public URL (its
    ``compute_link_prefix``), which is not where this gateway reaches Denver
    (a WAN link, a private address): learned from Denver's catalog, those
    links are pointed at the entry URL the client used, as links to the
    configured address are. Stored values that name it stay."""
    config = parse_config(
        {
            "site": "Berlin",
            "sites": {
                "Berlin": {},
                "Denver": {"endpoints": {"compute": "http://denver.wan/compute"}},
            },
            "backends": {"compute": "http://berlin.test/n"},
        },
        "<test>",
    )

    async def denver(ex: Exchange) -> MemoryReply:
        links = [{"rel": "self", "href": "http://denver.pub/compute/v2.1/servers/1"}]
        server = {"id": "1", "links": links, "metadata": {"url": "http://denver.pub/compute"}}
        location = ("location", "http://denver.pub/compute/v2.1/servers/1")
        return json_reply(200, {"server": server}, [location])

    gateway = Gateway(config, MemoryUpstream({"http://denver.wan": denver}))
    gateway.registry.learn("Denver", {"compute": "http://denver.pub/compute"})
    assert gateway.registry.public_endpoint("Denver", "compute") == "http://denver.pub/compute"
    prefix = "/scope/" + encode_scope("<*: Denver>")
    entry = f"http://gw.test{prefix}/compute"
    req = Request(
        method="GET",
        service="compute",
        path="/v2.1/servers/1",
        query="",
        headers=(("x-auth-token", "tok"),),
        entry_url=entry,
        body=Body(b""),
        url_scope=prefix[len("/scope/") :],
        url_prefix=prefix,
    )
    resp = asyncio.run(gateway.handle(req))
    assert resp.status == 200 and isinstance(resp.body, bytes)
    server = orjson.loads(resp.body)["server"]
    assert server["links"][0]["href"] == f"{entry}/v2.1/servers/1"
    assert server["metadata"]["url"] == "http://denver.pub/compute", "data is not rewritten"
    assert dict(resp.headers)["location"] == f"{entry}/v2.1/servers/1"
    gateway.registry.learn("Denver", {"compute": "http://denver.wan/compute"})
    assert gateway.registry.public_endpoint("Denver", "compute") is None
