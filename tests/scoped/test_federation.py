"""Independent sites (scoped.federation): a request carrying a Berlin token
reaches Denver with a token of Denver's own Keystone, obtained by
Keystone-to-Keystone federation from Berlin's. The sites' services are in
memory (scoped.memory); the Keystones are stand-ins on loopback
(tests/keystones.py) that keystoneauth1's own K2K plugin talks to."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from scoped_grammar import Site, parse

from scoped.carry import scope_of_token, strip
from scoped.circuit import State
from scoped.config import parse_config
from scoped.errors import ConfigError
from scoped.federation import SiteToken
from scoped.gateway import Gateway
from scoped.http import Body, Request, Response
from scoped.memory import Exchange, MemoryReply, MemoryUpstream, json_reply
from tests.federation import free_port
from tests.keystones import Keystone, keystones

SITES = ("Berlin", "Denver", "Paris")


def origin(site: str) -> str:
    return f"http://{site.lower()}.test"


@pytest.fixture
def ks() -> Iterator[dict[str, Keystone]]:
    with keystones(*SITES) as found:
        for k in found.values():
            k.project("demo")
        yield found


class Compute:
    """A site's Nova in memory: answers 200, or 401 to a token its Keystone
    does not know; keeps every token it got."""

    def __init__(self, keystone: Keystone) -> None:
        self.keystone = keystone
        self.tokens: list[str] = []

    async def __call__(self, ex: Exchange) -> MemoryReply:
        token = ex.header("x-auth-token") or ""
        self.tokens.append(token)
        if self.keystone.valid(strip(token)) is None:
            return json_reply(401, {"error": {"code": 401, "message": "requires authentication"}})
        return json_reply(200, {"servers": [{"id": self.keystone.site, "name": "vm"}]})


def gateway(
    ks: dict[str, Keystone], identity: str | None = None, **tokens: Any
) -> tuple[Gateway, dict[str, Compute]]:
    computes = {s: Compute(ks[s]) for s in SITES}
    given = {"mode": "federated", "project_name": "demo", **tokens}
    remote = {k: v for k, v in given.items() if v is not None}
    data: dict[str, Any] = {
        "site": "Berlin",
        "backends": {
            "compute": f"{origin('Berlin')}/compute",
            "identity": identity or ks["Berlin"].url,
        },
        "sites": {
            "Berlin": {},
            **{
                s: {"endpoints": {"compute": f"{origin(s)}/compute"}, "tokens": remote}
                for s in ("Denver", "Paris")
            },
        },
    }
    upstream = MemoryUpstream({origin(s): c for s, c in computes.items()})
    return Gateway(parse_config(data, "<test>"), upstream), computes


def get(gw: Gateway, token: str, scope: str) -> Response:
    headers = (("x-auth-token", token), ("x-scope", scope))
    req = Request("GET", "compute", "/v2.1/servers", "", headers, "http://gw/compute", Body())
    return asyncio.run(gw.handle(req))


def body(resp: Response) -> Any:
    assert isinstance(resp.body, bytes)
    return orjson.loads(resp.body)


def test_each_site_gets_a_token_of_its_own_keystone_for_its_own_project(
    ks: dict[str, Keystone],
) -> None:
    gw, computes = gateway(ks)
    alice = ks["Berlin"].issue("alice")
    resp = get(gw, alice, "<nova: Berlin&Denver&Paris>")
    assert resp.status == 200, resp.body
    assert [s["id"] for s in body(resp)["servers"]] == list(SITES)
    for site in ("Denver", "Paris"):
        [sent] = computes[site].tokens
        token = ks[site].valid(strip(sent))
        assert token is not None and token.user_name == "alice" and token.idp == "Berlin"
        assert token.project == {"id": ks[site].projects["demo"], "name": "demo"}
        # The scope travels on, with identity where this token was issued.
        carried = scope_of_token(sent)
        assert carried is not None and parse(carried)["identity"] == Site(site)
    assert strip(computes["Berlin"].tokens[0]) == alice  # home keeps the user's own


def test_a_site_never_sees_another_sites_token(ks: dict[str, Keystone]) -> None:
    gw, computes = gateway(ks)
    alice = ks["Berlin"].issue("alice")
    get(gw, alice, "<nova: Denver&Paris>")
    denver, paris = strip(computes["Denver"].tokens[0]), strip(computes["Paris"].tokens[0])
    assert alice not in {denver, paris} and denver != paris
    owner = {alice: "Berlin", denver: "Denver", paris: "Paris"}
    for site, k in ks.items():
        received = " ".join(f"{h} {b}" for _, _, h, b in k.seen)
        # A site's Keystone gets only tokens it issued.
        assert {owner[t] for t in owner if t in received} <= {site}, site
    assert alice in " ".join(b for _, _, _, b in ks["Berlin"].seen)  # the exchanges' start


def test_one_exchange_per_user_and_site_however_many_requests(ks: dict[str, Keystone]) -> None:
    gw, _ = gateway(ks)
    assert gw.federation is not None
    alice, bob = ks["Berlin"].issue("alice"), ks["Berlin"].issue("bob")
    for _ in range(100):
        assert get(gw, alice, "<nova: Denver&Paris>").status == 200
    assert gw.federation.exchanges == 2  # alice at Denver, alice at Paris
    metrics = gw.metrics.render().decode()
    for site in ("Denver", "Paris"):
        assert f'scoped_token_exchanges_total{{outcome="ok",site="{site}"}} 1.0' in metrics
    assert get(gw, bob, "<nova: Denver>").status == 200
    assert gw.federation.exchanges == 3


def test_a_site_token_near_its_expiry_is_exchanged_anew(ks: dict[str, Keystone]) -> None:
    ks["Denver"].lifetime = timedelta(seconds=30)  # under the 60 s margin: never reused
    gw, _ = gateway(ks)
    assert gw.federation is not None
    alice = ks["Berlin"].issue("alice")
    for _ in range(3):
        assert get(gw, alice, "<nova: Denver>").status == 200
    assert gw.federation.exchanges == 3


def test_a_refused_site_token_is_forgotten(ks: dict[str, Keystone]) -> None:
    gw, computes = gateway(ks)
    assert gw.federation is not None
    alice = ks["Berlin"].issue("alice")
    assert get(gw, alice, "<nova: Denver>").status == 200
    ks["Denver"].revoke(strip(computes["Denver"].tokens[0]))
    assert get(gw, alice, "<nova: Denver>").status == 401
    assert get(gw, alice, "<nova: Denver>").status == 200  # a new exchange
    assert gw.federation.exchanges == 2


def test_a_revoked_home_token_gets_no_new_site_token(ks: dict[str, Keystone]) -> None:
    gw, _ = gateway(ks)
    alice = ks["Berlin"].issue("alice")
    assert get(gw, alice, "<nova: Denver>").status == 200
    ks["Berlin"].revoke(alice)
    # Revocation does not cross Keystones: the site token lives on ...
    assert get(gw, alice, "<nova: Denver>").status == 200
    # ... but no new one is had for the revoked token.
    resp = get(gw, alice, "<nova: Paris>")
    assert resp.status == 502
    assert "Berlin's Keystone refused the token" in body(resp)["error"]["message"]


def test_a_site_that_is_no_service_provider_is_named_with_what_is_missing(
    ks: dict[str, Keystone],
) -> None:
    del ks["Berlin"].service_providers["Paris"]
    gw, computes = gateway(ks)
    resp = get(gw, ks["Berlin"].issue("alice"), "<nova: Paris>")
    assert resp.status == 502
    message = body(resp)["error"]["message"]
    assert "Paris" in message and "no service provider 'Paris'" in message
    assert computes["Paris"].tokens == [], "nothing was sent to Paris"


def test_a_site_whose_keystone_cannot_be_reached_fails_as_any_call_to_it(
    ks: dict[str, Keystone],
) -> None:
    """The exchange is the first call to the site: refused there, the site's
    outcome is ``refused`` (its circuit counts it), and nothing reached it."""
    ks["Berlin"].service_providers["Paris"] = f"http://127.0.0.1:{free_port()}"  # nothing there
    gw, computes = gateway(ks)
    resp = get(gw, ks["Berlin"].issue("alice"), "<nova: Berlin&Paris>")
    assert resp.status == 502
    message = body(resp)["error"]["message"]
    assert "Paris: refused (its Keystone, for a token of its own" in message, message
    assert computes["Paris"].tokens == []
    metrics = gw.metrics.render().decode()
    assert 'scoped_token_exchanges_total{outcome="error",site="Paris"} 1.0' in metrics
    for _ in range(gw.circuits.settings.failures - 1):
        get(gw, ks["Berlin"].issue("alice"), "<nova: Paris>")
    assert gw.circuits.state("Paris") is State.OPEN


def test_this_sites_keystone_unreachable_is_not_the_other_sites_failure(
    ks: dict[str, Keystone],
) -> None:
    gw, _ = gateway(ks, identity=f"http://127.0.0.1:{free_port()}")  # nothing there
    alice = ks["Berlin"].issue("alice")
    resp = get(gw, alice, "<nova: Denver>")
    assert resp.status == 502
    message = body(resp)["error"]["message"]
    assert "Denver: error (Berlin's Keystone, asked for a token of Denver" in message, message


def test_an_exchange_outlives_the_request_a_failed_sibling_cancelled(
    ks: dict[str, Keystone],
) -> None:
    """``<nova: Denver&Paris>``: Denver fails at once (no service provider),
    which cancels the call to Paris while its exchange runs. The exchange
    still finishes and is cached: the next request to Paris makes none."""
    del ks["Berlin"].service_providers["Denver"]
    gw, _ = gateway(ks)
    federation = gw.federation
    assert federation is not None
    plain = federation.exchange
    paris_started = threading.Event()

    def slow(site: str, user_token: str) -> SiteToken:
        if site == "Paris":
            paris_started.set()
            time.sleep(0.3)
        return plain(site, user_token)

    federation.exchange = slow  # type: ignore[method-assign]
    alice = ks["Berlin"].issue("alice")

    async def main() -> tuple[Response, int, Response]:
        headers = (("x-auth-token", alice), ("x-scope", "<nova: Denver&Paris>"))
        req = Request("GET", "compute", "/v2.1/servers", "", headers, "http://gw/c", Body())
        failed = await gw.handle(req)
        for _ in range(100):  # the exchange goes on in its thread; bounded wait
            if not federation._pending:
                break
            await asyncio.sleep(0.02)
        made = federation.exchanges
        headers = (("x-auth-token", alice), ("x-scope", "<nova: Paris>"))
        req = Request("GET", "compute", "/v2.1/servers", "", headers, "http://gw/c", Body())
        return failed, made, await gw.handle(req)

    failed, made, again = asyncio.run(main())
    assert paris_started.is_set()
    assert failed.status == 502
    assert made == 1  # Paris's, finished after its request was cancelled
    assert again.status == 200
    assert federation.exchanges == 1


def test_a_token_issued_by_the_site_itself_goes_as_it_is(ks: dict[str, Keystone]) -> None:
    """``<*: Denver>`` through Berlin's gateway, the token got through that
    scope: Denver's own, unknown to Berlin's Keystone, good at Denver as it
    is; nothing is exchanged."""
    gw, computes = gateway(ks)
    assert gw.federation is not None
    token = ks["Denver"].issue("alice")
    resp = get(gw, token, "<*: Denver>")
    assert resp.status == 200, resp.body
    [sent] = computes["Denver"].tokens
    assert strip(sent) == token
    assert gw.federation.exchanges == 0
    assert "scoped_token_exchanges_total{" not in gw.metrics.render().decode()
    reads = len(ks["Berlin"].seen)
    assert get(gw, token, "<*: Denver>").status == 200
    assert len(ks["Berlin"].seen) == reads  # known as not Berlin's: not asked again


def test_a_home_token_whose_scope_sends_identity_elsewhere_is_exchanged(
    ks: dict[str, Keystone],
) -> None:
    """``<keystone: Denver>`` with a Berlin token (the client plugin asks for
    its token at home): the scope does not say who issued the token, Berlin's
    Keystone does; Denver gets a token of its own."""
    gw, computes = gateway(ks)
    assert gw.federation is not None
    resp = get(gw, ks["Berlin"].issue("alice"), "<*: Denver>")
    assert resp.status == 200, resp.body
    [sent] = computes["Denver"].tokens
    assert ks["Denver"].valid(strip(sent)) is not None
    assert gw.federation.exchanges == 1


def test_with_no_project_configured_a_site_token_is_for_the_users_own_project(
    ks: dict[str, Keystone],
) -> None:
    for k in ks.values():
        k.project("ops")
    gw, computes = gateway(ks, project_name=None)
    resp = get(gw, ks["Berlin"].issue("alice", project="ops"), "<nova: Denver>")
    assert resp.status == 200, resp.body
    [sent] = computes["Denver"].tokens
    token = ks["Denver"].valid(strip(sent))
    assert token is not None
    # Denver's own project of that name: an ID of its own.
    assert token.project == {"id": ks["Denver"].projects["ops"], "name": "ops"}
    assert ks["Denver"].projects["ops"] != ks["Berlin"].projects["ops"]


def test_the_filter_gets_site_tokens_from_its_own_identity_endpoint(
    ks: dict[str, Keystone],
) -> None:
    """The WSGI filter has no backends: this site's Keystone is its own
    identity endpoint in the registry."""
    computes = {s: Compute(ks[s]) for s in SITES}
    data: dict[str, Any] = {
        "site": "Berlin",
        "sites": {
            "Berlin": {"endpoints": {"identity": ks["Berlin"].url}},
            "Denver": {
                "endpoints": {"compute": f"{origin('Denver')}/compute"},
                "tokens": {"mode": "federated"},
            },
        },
    }
    upstream = MemoryUpstream({origin(s): c for s, c in computes.items()})
    gw = Gateway(parse_config(data, "<test>"), upstream)
    resp = get(gw, ks["Berlin"].issue("alice"), "<nova: Denver>")
    assert resp.status == 200, resp.body
    [sent] = computes["Denver"].tokens
    assert ks["Denver"].valid(strip(sent)) is not None


def test_federated_sites_need_this_sites_keystone() -> None:
    data = {
        "site": "Berlin",
        "sites": {
            "Berlin": {},
            "Denver": {
                "endpoints": {"compute": "http://denver.test/compute"},
                "tokens": {"mode": "federated", "project_name": "demo"},
            },
        },
    }
    with pytest.raises(ConfigError, match=r"backends\.identity"):
        Gateway(parse_config(data, "<test>"), MemoryUpstream())
