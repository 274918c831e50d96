"""The client in front of real gateways: ``openstack server list --os-scope
"<nova: Berlin&Denver>"`` lists the servers of both sites, through Berlin's
gateway; so does an openstacksdk ``Connection`` from ``connect()``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from scoped_osc import connect

from tests.client_plugin.osc import (
    SERVER_FIELDS,
    Federation,
    Result,
    authenticated,
    cloud,
    clouds_yaml,
    federation,
    is_token_request,
    run_openstack,
    split_token,
)
from tests.standin import make_items

SCOPE = "<compute: Berlin&Denver, *: Berlin>"


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    with federation(("Berlin", "Denver")) as f:
        yield f


@pytest.fixture
def net(fed: Federation, tmp_path: Path) -> Iterator[Federation]:
    fed.reset()
    fed.sites["Berlin"].servers[:] = make_items("berlin", 2, seed="B", **SERVER_FIELDS)
    fed.sites["Denver"].servers[:] = make_items("denver", 3, seed="D", **SERVER_FIELDS)
    yield fed
    fed.reset()


@pytest.fixture
def clouds(net: Federation, tmp_path: Path) -> Path:
    # Berlin's Keystone: the token request goes there, untouched; its catalog
    # sends compute, image and network to Berlin's gateway.
    auth_url = f"{net.site_urls['Berlin']}/identity/v3"
    return clouds_yaml(
        tmp_path / "clouds.yaml",
        {
            "berlin": cloud(auth_url, "Berlin"),
            "scoped": cloud(auth_url, "Berlin", scope="<nova: Berlin&Denver>"),
        },
    )


def openstack(tmp_path: Path, clouds: Path, *args: str) -> Result:
    return run_openstack(tmp_path, clouds, "--os-cloud", "berlin", *args)


def test_server_list_lists_both_sites_through_the_gateway(
    net: Federation, clouds: Path, tmp_path: Path
) -> None:
    result = openstack(
        tmp_path, clouds, "server", "list", "--os-scope", "<nova: Berlin&Denver>", "-f", "json"
    )
    assert result.status == 0, result.stderr
    names = sorted(s["Name"] for s in json.loads(result.stdout))
    assert names == ["berlin-0000", "berlin-0001", "denver-0000", "denver-0001", "denver-0002"]

    berlin, denver = net.sites["Berlin"], net.sites["Denver"]
    (token,) = [r for r in berlin.received if is_token_request(r)]
    assert "x-scope" not in token.headers and "x-auth-token" not in token.headers
    assert not [r for r in denver.received if is_token_request(r)]
    # Denver got the listing from Berlin's gateway, with the user's scope and token.
    (listing,) = denver.requests("GET", "/compute/v2.1/servers/detail")
    assert listing.headers["x-scope"] == SCOPE
    bare, carried = split_token(listing.headers["x-auth-token"])
    assert bare.startswith("tok-Berlin-") and carried == SCOPE
    for r in authenticated(berlin.received + denver.received):
        assert r.headers["x-scope"] == SCOPE
        assert split_token(r.headers["x-auth-token"])[1] == SCOPE


def test_debug_shows_x_scope_sites(net: Federation, clouds: Path, tmp_path: Path) -> None:
    result = openstack(
        tmp_path, clouds, "--debug", "server", "list", "--os-scope", "<nova: Berlin&Denver>"
    )
    assert result.status == 0, result.stderr
    # keystoneauth logs every response header at debug level; the gateway's
    # per-site report of the fan-out is among them.
    lines = [line for line in result.stderr.splitlines() if "x-scope-sites:" in line.lower()]
    assert any("Berlin=200;t=" in line and "Denver=200;t=" in line for line in lines), lines


def test_a_fan_out_error_prints_the_gateways_message(
    net: Federation, clouds: Path, tmp_path: Path
) -> None:
    net.sites["Denver"].fail_status = 500
    result = openstack(tmp_path, clouds, "server", "list", "--os-scope", "<nova: Berlin&Denver>")
    assert result.status == 1
    assert "Traceback" not in result.stderr
    # The gateway's message names every site's outcome.
    assert "502" in result.stderr
    assert "Berlin: 200" in result.stderr and "Denver: 500" in result.stderr


def test_sdk_connection_lists_both_sites_through_the_gateway(
    net: Federation, clouds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    monkeypatch.setenv("HOME", str(tmp_path))
    for conn in (connect(cloud="berlin", scope="<nova: Berlin&Denver>"), connect(cloud="scoped")):
        try:
            names = sorted(s.name for s in conn.compute.servers())
        finally:
            conn.close()
        assert names == ["berlin-0000", "berlin-0001", "denver-0000", "denver-0001", "denver-0002"]
    listings = net.sites["Denver"].requests("GET", "/compute/v2.1/servers/detail")
    assert len(listings) == 2
    assert all(r.headers["x-scope"] == SCOPE for r in listings)


@pytest.fixture
def via_gateway(net: Federation, tmp_path: Path) -> Path:
    """A cloud whose auth URL is Berlin's gateway (as in the lab): the client
    can read what that gateway knows (GET /.well-known/scoped)."""
    auth_url = f"{net.gateways['Berlin']}/identity/v3"
    return clouds_yaml(tmp_path / "gw-clouds.yaml", {"berlin": cloud(auth_url, "Berlin")})


def test_the_gateway_publishes_its_sites(net: Federation) -> None:
    import httpx  # noqa: PLC0415

    doc = httpx.get(f"{net.gateways['Denver']}/.well-known/scoped", timeout=10).json()
    assert doc["site"] == "Denver"
    assert doc["sites"] == ["Berlin", "Denver"]
    assert doc["services"]["compute"] == "/compute"


def test_scope_explain_checks_names_against_the_gateways_sites(
    net: Federation, via_gateway: Path, tmp_path: Path
) -> None:
    typo = openstack(tmp_path, via_gateway, "scope", "explain", "<nova: Berln&Denver>")
    assert typo.status == 2
    assert "unknown site 'Berln'; did you mean 'Berlin'?" in typo.stderr
    star = openstack(tmp_path, via_gateway, "scope", "explain", "--json", "<nova: *>")
    assert star.status == 0, star.stderr
    plan = json.loads(star.stdout)["plan"]
    assert plan["compute"] == {"all": [{"site": "Berlin"}, {"site": "Denver"}]}


def test_a_typo_in_a_site_is_refused_before_anything_is_sent(
    net: Federation, via_gateway: Path, tmp_path: Path
) -> None:
    result = openstack(tmp_path, via_gateway, "server", "list", "--os-scope", "<nova: Denvr>")
    assert result.status == 2
    assert "--os-scope: " in result.stderr and "did you mean 'Denver'?" in result.stderr
    assert "Traceback" not in result.stderr
    for site in net.sites.values():
        assert not [r for r in site.received if is_token_request(r)], "no token was asked for"
