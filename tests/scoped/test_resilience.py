"""Identity across sites, catalogs and resilience (docs/design.md §4-§7), on
loopback with real gateways and stand-in sites."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scoped.carry import attach
from scoped.config import Timeouts, parse_config
from scoped.errors import Refused
from scoped.gateway import Gateway
from scoped.http import Body, Request
from scoped.upstream import HttpUpstream, Reply
from tests.federation import DOWN, Federation, federation
from tests.federation import scope_sites as outcomes
from tests.standin import SiteData, make_items, serve_in_thread

RESILIENT = {
    "circuit": {"failures": 2, "cooldown": 30.0, "probe_interval": 0.2},
    "retries": {"attempts": 2, "backoff": 0.01},
}


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    with federation(overrides=RESILIENT) as f:
        yield f


@pytest.fixture
def net(fed: Federation) -> Iterator[Federation]:
    fed.reset()
    yield fed
    fed.reset()


def test_the_circuit_opens_and_failover_skips_the_down_site(net: Federation) -> None:
    url = net.url("Berlin", "compute", "/v2.1/servers")
    scope = {"X-Scope": f"<nova: {DOWN}|Paris>"}
    with httpx.Client(timeout=20) as c:
        first = [outcomes(c.get(url, headers=scope))[DOWN] for _ in range(2)]
        assert first == ["refused", "refused"]
        later = c.get(url, headers=scope)
        assert later.status_code == 200
        assert outcomes(later) == {DOWN: "skipped", "Paris": "200"}
        metrics = c.get(net.gateways["Berlin"] + "/metrics").text
        health = c.get(net.gateways["Berlin"] + "/healthz").json()
    assert f'scoped_circuit_state{{site="{DOWN}"}} 1.0' in metrics
    # A site whose circuit never left closed has no series (1000 sites: 1000 zeros).
    assert 'scoped_circuit_state{site="Paris"}' not in metrics
    assert health["status"] == "ok"  # another site's outage is not this gateway's
    assert health["sites"][DOWN] == "open"
    assert health["sites"]["Paris"] == "closed"
    assert 'scoped_failovers_total{from_site="Oslo",to_site="Paris"}' in metrics


def test_a_partitioned_site_is_skipped_then_recovers(net: Federation) -> None:
    net.sites["Paris"].servers.extend(make_items("p", 2, seed="P"))
    net.sites["Berlin"].servers.extend(make_items("b", 1, seed="B"))
    either = {"X-Scope": "<nova: Denver|Paris>"}
    local = {"X-Scope": "<nova: Berlin>"}
    url = net.url("Berlin", "compute", "/v2.1/servers")
    with httpx.Client(timeout=20) as c:
        assert outcomes(c.get(url, headers=either)) == {"Denver": "200"}
        net.stop_gateway("Denver")  # the link to Denver is cut
        try:
            seen = [outcomes(c.get(url, headers=either)) for _ in range(4)]
            assert seen[0] == {"Denver": "refused", "Paris": "200"}
            assert seen[-1] == {"Denver": "skipped", "Paris": "200"}
            # Requests that do not need Denver do not notice.
            t = time.perf_counter()
            resp = c.get(url, headers=local)
            print(f"local request while Denver is cut: {(time.perf_counter() - t) * 1e3:.1f} ms")
            assert outcomes(resp) == {"Berlin": "200"}
            both = c.get(url, headers={"X-Scope": "<nova: Berlin&Denver>"})
            assert both.status_code == 502
            assert "Denver" in both.json()["error"]["message"]
        finally:
            net.start_gateway("Denver")
        # The health probe closes the circuit again once Denver answers.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            back = outcomes(c.get(url, headers=either))
            if back == {"Denver": "200"}:
                break
            time.sleep(0.1)
        assert back == {"Denver": "200"}


def test_a_probe_answered_503_keeps_the_circuit_open(net: Federation) -> None:
    """The answer that opened a circuit (a proxy's 503: "not there") must not
    close it when the health probe gets it too."""
    net.sites["Denver"].fail_status = 503
    url = net.url("Berlin", "compute", "/v2.1/servers")
    either = {"X-Scope": "<nova: Denver|Paris>"}
    with httpx.Client(timeout=20) as c:
        first = [outcomes(c.get(url, headers=either)) for _ in range(2)]
        assert first == [{"Denver": "503", "Paris": "200"}] * 2
        time.sleep(1.0)  # five probe intervals, each probe answered 503
        assert outcomes(c.get(url, headers=either)) == {"Denver": "skipped", "Paris": "200"}
        net.sites["Denver"].fail_status = None
        deadline = time.monotonic() + 10
        while (back := outcomes(c.get(url, headers=either))) != {"Denver": "200"}:
            assert time.monotonic() < deadline, back
            time.sleep(0.1)


def test_a_hanging_site_fails_over_within_its_timeout(net: Federation) -> None:
    net.sites["Denver"].hang = True
    net.sites["Paris"].servers.extend(make_items("p", 1, seed="P"))
    url = net.url("Berlin", "compute", "/v2.1/servers")
    with httpx.Client(timeout=20) as c:
        resp = c.get(url, headers={"X-Scope": "<nova: Denver|Paris>"})
    assert outcomes(resp) == {"Denver": "timeout", "Paris": "200"}
    ms = float(resp.headers["x-scope-sites"].split(";t=")[1].split(",")[0])
    assert ms >= 1000  # it waited for the site's total timeout (2 s here) ...
    net.sites["Denver"].hang = False


def test_links_and_location_point_back_at_this_gateway(net: Federation) -> None:
    berlin = net.gateways["Berlin"]
    with httpx.Client(timeout=20) as c:
        resp = c.post(
            net.url("Berlin", "compute", "/v2.1/servers"),
            headers={"X-Scope": "<nova: Denver>"},
            json={"server": {"name": "vm"}},
        )
        assert resp.status_code == 202
        assert resp.headers["location"].startswith(berlin + "/compute/")
        vm = resp.json()["server"]
        hrefs = [link["href"] for link in vm["links"]]
        assert hrefs and all(h.startswith(berlin + "/compute/") for h in hrefs), hrefs


# --- identity ----------------------------------------------------------------


@pytest.fixture
def paris_keystone() -> Iterator[tuple[str, SiteData]]:
    data = SiteData("Paris")
    with serve_in_thread(data) as url:
        yield url, data


def identity_config(paris_url: str, berlin_backend: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "site": "Berlin",
        "sites": {
            "Berlin": {"endpoints": {"identity": "http://127.0.0.1:1/identity"}},
            "Paris": {
                "auth": {
                    "auth_url": f"{paris_url}/identity/v3",
                    "username": "scoped",
                    "password": "secret",
                    "project_name": "service",
                },
                **extra,
            },
        },
        "backends": {"identity": berlin_backend},
    }


async def _handle(
    gw: Gateway, method: str, service: str, path: str, headers: dict[str, str]
) -> Any:
    req = Request(
        method=method,
        service=service,
        path=path,
        query="",
        headers=tuple((k.lower(), v) for k, v in headers.items()),
        entry_url=f"http://gw/{service}",
        body=Body(b""),
    )
    resp = await gw.handle(req)
    body = resp.body if isinstance(resp.body, bytes) else b"".join([c async for c in resp.body])
    return resp.status, dict(resp.headers), body


def test_token_validation_goes_to_the_issuing_site_with_a_service_token(
    paris_keystone: tuple[str, SiteData], caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio  # noqa: PLC0415

    paris_url, paris = paris_keystone
    berlin = SiteData("Berlin")
    user_token = attach("gAAAAAuser-token-from-paris", "<*: Paris>")
    own_token = "gAAAAAberlin-glance-service-token"
    caplog.set_level(logging.DEBUG)
    with serve_in_thread(berlin) as berlin_url:
        config = parse_config(
            identity_config(
                paris_url, berlin_url, {"endpoints": {"identity": f"{paris_url}/identity"}}
            )
        )

        async def run() -> Any:
            gw = Gateway(config)
            try:
                return await _handle(
                    gw,
                    "GET",
                    "identity",
                    "/v3/auth/tokens",
                    {"X-Auth-Token": own_token, "X-Subject-Token": user_token},
                )
            finally:
                await gw.close()

        status, headers, _ = asyncio.run(run())
    assert status == 200
    assert headers["x-scope-sites"].startswith("Paris=200")
    validations = paris.requests("GET", "/identity/v3/auth/tokens")
    assert len(validations) == 1
    seen = validations[0].headers
    # Berlin's own token would mean nothing at Paris: the gateway's service
    # token for Paris, issued by Paris's Keystone, went instead.
    assert seen["x-auth-token"].startswith("tok-Paris-")
    assert seen["x-subject-token"] == user_token  # Paris's gateway strips it; a site as-is
    assert berlin.received == []
    # Tokens never reach the logs, whatever the level.
    text = caplog.text
    for secret in (own_token, "gAAAAAuser-token-from-paris", seen["x-auth-token"], "secret"):
        assert secret not in text


def test_catalog_discovery_learns_endpoints_and_a_dead_keystone_does_not_block(
    paris_keystone: tuple[str, SiteData],
) -> None:
    import asyncio  # noqa: PLC0415

    paris_url, paris = paris_keystone
    paris.servers.extend(make_items("p", 2, seed="P"))
    cfg = identity_config(paris_url, "http://127.0.0.1:1", {})
    cfg["sites"]["Dead"] = {
        "auth": {
            "auth_url": "http://127.0.0.1:1/v3",
            "username": "u",
            "password": "p",
            "project_name": "x",
        },
        "timeouts": {"connect": 0.5, "total": 1},
    }
    config = parse_config(cfg)

    async def run() -> Any:
        gw = Gateway(config)
        await gw.start()
        try:
            for _ in range(100):
                if gw.registry.endpoint("Paris", "compute"):
                    break
                await asyncio.sleep(0.05)
            learned = gw.registry.endpoint("Paris", "compute")
            result = await _handle(
                gw, "GET", "compute", "/v2.1/servers", {"X-Scope": "<nova: Paris>"}
            )
            return learned, result, gw.metrics.render().decode()
        finally:
            await gw.close()

    learned, (status, _, body), metrics = asyncio.run(run())
    assert learned == f"{paris_url}/compute"  # unversioned: the catalog said /compute/v2.1
    assert status == 200
    assert len(__import__("json").loads(body)["servers"]) == 2
    assert 'scoped_catalog_refreshes_total{outcome="ok",site="*"}' in metrics
    assert 'scoped_catalog_refreshes_total{outcome="ok",site="Paris"}' not in metrics
    assert 'scoped_catalog_refreshes_total{outcome="error",site="Dead"}' in metrics


class FlakyUpstream:
    """The real upstream client, with refused connections injected before it.

    A stand-in for what cannot be staged deterministically here: a site that
    refuses a connection and accepts the very next one, milliseconds later.
    """

    def __init__(self, refusals: int) -> None:
        self.real = HttpUpstream()
        self.refusals = refusals
        self.calls = 0

    async def send(self, method: str, url: str, headers: Any, body: Any, t: Timeouts) -> Reply:
        self.calls += 1
        if self.calls <= self.refusals:
            raise Refused("connection refused (injected)")
        return await self.real.send(method, url, headers, body, t)

    async def close(self) -> None:
        await self.real.close()


@pytest.mark.parametrize(
    ("method", "refusals", "status"),
    [
        ("GET", 1, 200),
        ("GET", 2, 502),
        ("POST", 1, 502),
    ],
)
def test_retries_are_bounded_and_for_idempotent_requests_only(
    method: str, refusals: int, status: int
) -> None:
    import asyncio  # noqa: PLC0415

    site = SiteData("Berlin")
    with serve_in_thread(site) as url:
        config = parse_config(
            {
                "site": "Berlin",
                "sites": {"Berlin": {}},
                "backends": {"compute": url},
                "retries": {"attempts": 2, "backoff": 0.01},
            }
        )
        flaky = FlakyUpstream(refusals)

        async def run() -> Any:
            gw = Gateway(config, upstream=flaky)
            try:
                return await _handle(gw, method, "compute", "/echo/x", {})
            finally:
                await gw.close()

        got, _, body = asyncio.run(run())
    assert got == status
    if status == 502:
        assert "Berlin: refused" in __import__("json").loads(body)["error"]["message"]
    tries = 1 if method == "POST" else min(refusals + 1, 2)
    assert flaky.calls == tries
