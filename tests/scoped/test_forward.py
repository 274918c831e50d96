"""How a site call is addressed (scoped.forward): the headers of a fan-out
are made once per request and shared, and what differs stays apart."""

from __future__ import annotations

from collections.abc import AsyncIterator

from scoped.carry import AUTH_TOKEN, HOP_HEADER, SERVICE_TOKEN, SUFFIX, scope_of_token
from scoped.config import parse_config
from scoped.forward import upstream_headers
from scoped.http import REQUEST_ID, Body, Request
from scoped.sites import Registry

ENTRY = "http://gw.berlin.test/compute"


def registry() -> Registry:
    return Registry(
        parse_config(
            {
                "site": "Berlin",
                "sites": {
                    "Berlin": {},
                    "Denver": {"endpoints": {"compute": "http://denver.test/compute"}},
                    "Paris": {"endpoints": {"compute": "http://paris.test/compute"}},
                },
                "backends": {"compute": "http://berlin.test/compute"},
            }
        )
    )


def request(*headers: tuple[str, str], body: Body | None = None) -> Request:
    given = (("accept-encoding", "gzip"), ("x-auth-token", "tok"), *headers)
    return Request("GET", "compute", "/v2.1/servers", "", given, ENTRY, body or Body())


def test_remote_sites_share_every_header_but_the_hop_mark() -> None:
    reg, req = registry(), request(("x-service-token", "svc"))
    denver = upstream_headers(req, reg, "Denver", merging=True)
    paris = upstream_headers(req, reg, "Paris", merging=True)
    assert denver[:-1] == paris[:-1]
    assert denver[-1] == (HOP_HEADER, "Berlin>Denver")
    assert paris[-1] == (HOP_HEADER, "Berlin>Paris")
    assert (REQUEST_ID, req.request_id) in denver
    # A service token sent elsewhere is marked as issued here; at home it is not.
    assert SUFFIX in dict(denver)[SERVICE_TOKEN]
    home = upstream_headers(req, reg, "Berlin", merging=True)
    assert dict(home)[SERVICE_TOKEN] == "svc"
    assert all(name != HOP_HEADER for name, _ in home)


def test_each_call_gets_a_list_of_its_own() -> None:
    reg, req = registry(), request()
    first = upstream_headers(req, reg, "Berlin", merging=False)
    first.append(("x-added", "by a policy"))
    again = upstream_headers(req, reg, "Berlin", merging=False)
    assert ("x-added", "by a policy") not in again
    remote = upstream_headers(req, reg, "Denver", merging=False)
    remote.clear()
    assert upstream_headers(req, reg, "Paris", merging=False)


def test_what_the_headers_depend_on_is_never_mixed_up() -> None:
    reg, req = registry(), request(("content-length", "0"))
    merged = dict(upstream_headers(req, reg, "Denver", merging=True))
    plain = dict(upstream_headers(req, reg, "Denver", merging=False))
    assert "accept-encoding" not in merged
    assert plain["accept-encoding"] == "gzip"
    assert "content-length" not in plain  # a replayable body: set from the bytes
    # A scope carried once planned reaches the next calls' tokens.
    assert dict(upstream_headers(req, reg, "Denver", merging=False))[AUTH_TOKEN] == "tok"
    req.carry("<compute: Denver>")
    token = dict(upstream_headers(req, reg, "Denver", merging=False))[AUTH_TOKEN]
    assert scope_of_token(token) == "<compute: Denver>"
    # A streamed body keeps its length header.
    streamed = request(("content-length", "5"), body=Body(stream=_chunks(), length=5))
    assert dict(upstream_headers(streamed, reg, "Denver", merging=False))["content-length"] == "5"


async def _chunks() -> AsyncIterator[bytes]:
    yield b"hello"
