"""The keystoneauth1 and openstacksdk side, in process, against a real stand-in
site: ``scoped_session``, ``ScopedAdapter``, the auth plugin wrapper and
``connect()``; every service alike, the token request untouched."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from pathlib import Path

import openstack
import pytest
from aiohttp import web
from keystoneauth1 import adapter as ksa_adapter
from keystoneauth1 import session as ksa_session
from keystoneauth1 import token_endpoint
from keystoneauth1.identity import base as ksa_identity
from keystoneauth1.identity import v3
from scoped_grammar import ScopeError, parse
from scoped_osc import ClientScope, ScopedAdapter, connect, scoped_auth, scoped_session

from tests.client_plugin.osc import (
    EXTRA_CATALOG,
    SERVER_FIELDS,
    authenticated,
    cloud,
    clouds_yaml,
    extra_services,
    is_token_request,
    split_token,
)
from tests.standin import SiteData, build_app, make_items, serve_in_thread

SCOPE = "<compute: Berlin&Denver, *: Berlin>"

# service type -> a list call of that service, relative to its catalog URL
CALLS = {
    "compute": "/servers/detail",
    "image": "/v2/images",
    "identity": "/v3/users",
    "network": "/v2.0/networks",
    "block-storage": "/volumes/detail",
    "placement": "/resource_providers",
}
PATHS = {
    "/compute/v2.1/servers/detail",
    "/image/v2/images",
    "/identity/v3/users",
    "/networking/v2.0/networks",
    "/volume/v3/volumes/detail",
    "/placement/resource_providers",
}


class Site:
    def __init__(self, data: SiteData, url: str) -> None:
        self.data, self.url = data, url
        self.unauthorized_left = 0

    @property
    def auth_url(self) -> str:
        return f"{self.url}/identity/v3"

    def password(self) -> v3.Password:
        return v3.Password(
            auth_url=self.auth_url,
            username="demo",
            password="secret",
            project_name="demo",
            user_domain_name="Default",
            project_domain_name="Default",
        )


@pytest.fixture(scope="module")
def served() -> Iterator[Site]:
    data = SiteData(
        "Berlin",
        servers=make_items("vm", 2, seed="B", **SERVER_FIELDS),
        images=make_items("img", 2, seed="B"),
        networks=make_items("net", 2, seed="B"),
        users=make_items("user", 2, seed="B"),
        catalog=dict(EXTRA_CATALOG),
    )
    app = extra_services(build_app(data))
    holder: list[Site] = []

    async def once_unauthorized(request: web.Request) -> web.Response:
        site = holder[0]
        if site.unauthorized_left > 0:
            site.unauthorized_left -= 1
            return web.json_response({"error": {"code": 401, "message": "expired"}}, status=401)
        return web.json_response({"ok": True})

    app.router.add_get("/unauthorized-once", once_unauthorized)
    with serve_in_thread(app) as url:
        holder.append(Site(data, url))
        yield holder[0]


@pytest.fixture
def site(served: Site) -> Iterator[Site]:
    served.data.received.clear()
    yield served
    served.data.received.clear()


def assert_scoped(site: Site, scope: str = SCOPE) -> None:
    """Every request with a token carries ``scope`` twice (header and suffix);
    the token request carries neither; no tokenless request carries a scope."""
    received = site.data.received
    tokens = [r for r in received if is_token_request(r)]
    assert tokens, "no token request seen"
    for r in tokens:
        assert "x-scope" not in r.headers
        assert "x-auth-token" not in r.headers
    served = authenticated(received)
    assert served
    for r in served:
        assert r.headers["x-scope"] == scope, r.path
        bare, carried = split_token(r.headers["x-auth-token"])
        assert bare.startswith("tok-Berlin-")
        assert carried == scope
    for r in received:
        if "x-auth-token" not in r.headers:
            assert "x-scope" not in r.headers, r.path


# --- keystoneauth1 ------------------------------------------------------------


def test_scoped_session_carries_the_scope_to_every_service(site: Site) -> None:
    plain = ksa_session.Session(auth=site.password())
    scoped = scoped_session(plain, "{nova: Berlin & Denver}", home="Berlin")
    for service, path in CALLS.items():
        resp = ksa_adapter.Adapter(scoped, service_type=service, interface="public").get(path)
        assert resp.status_code == 200, (service, resp.text)
    assert {r.path for r in authenticated(site.data.received)} == PATHS
    assert_scoped(site)
    assert len([r for r in site.data.received if is_token_request(r)]) == 1


def test_the_session_given_is_left_as_it_was(site: Site) -> None:
    plain = ksa_session.Session(auth=site.password())
    inner = plain.auth
    scoped_session(plain, "<nova: Denver>", home="Berlin").get(
        "/servers/detail", endpoint_filter={"service_type": "compute"}
    )
    assert plain.auth is inner
    site.data.received.clear()
    plain.get("/servers/detail", endpoint_filter={"service_type": "compute"})
    (seen,) = site.data.received  # the token is shared: no new token request
    assert "x-scope" not in seen.headers
    assert split_token(seen.headers["x-auth-token"])[1] is None


def test_scoped_adapter(site: Site) -> None:
    session = ksa_session.Session(auth=site.password())
    images = ScopedAdapter(
        session, scope="<glance: Denver|Paris>", home="Berlin", service_type="image"
    )
    assert images.get("/v2/images").status_code == 200
    assert images.scope.text == "<image: Denver|Paris, *: Berlin>"
    assert_scoped(site, "<image: Denver|Paris, *: Berlin>")
    assert session.auth is not images.auth


def test_a_new_token_after_a_401_carries_the_scope_too(site: Site) -> None:
    session = scoped_session(site.password(), "<nova: Denver>", home="Berlin")
    site.unauthorized_left = 1
    resp = session.get(f"{site.url}/unauthorized-once")
    assert resp.status_code == 200
    tries = site.data.requests("GET", "/unauthorized-once")
    assert len(tries) == 2
    assert len([r for r in site.data.received if is_token_request(r)]) == 2
    first, second = (split_token(r.headers["x-auth-token"]) for r in tries)
    assert first[0] != second[0]  # re-authenticated by the wrapped plugin
    assert first[1] == second[1] == "<compute: Denver, *: Berlin>"
    assert_scoped(site, "<compute: Denver, *: Berlin>")


def test_without_a_region_the_home_is_the_keystone_authenticated_with(site: Site) -> None:
    session = scoped_session(site.password(), "<nova: Denver>")
    session.get("/servers/detail", endpoint_filter={"service_type": "compute"})
    assert_scoped(site, "<compute: Denver, *: Berlin>")


def test_any_auth_plugin_not_only_keystone(site: Site) -> None:
    plugin = token_endpoint.Token(f"{site.url}/echo", "admin-token")
    session = scoped_session(plugin, "<nova: Denver>", home="Berlin")
    body = session.get("/anything", endpoint_filter={"service_type": "compute"}).json()
    assert body["headers"]["x-scope"] == "<compute: Denver, *: Berlin>"
    assert split_token(body["headers"]["x-auth-token"]) == (
        "admin-token",
        body["headers"]["x-scope"],
    )


def test_the_wrapper_is_the_wrapped_keystone_plugin_for_everything_else(site: Site) -> None:
    inner = site.password()
    wrapped = scoped_auth(inner, ClientScope(parse("<nova: Denver>"), "Berlin"))
    # openstacksdk reads the catalog only through a BaseIdentityPlugin.
    assert isinstance(wrapped, ksa_identity.BaseIdentityPlugin)
    for name, method in inspect.getmembers(ksa_identity.BaseIdentityPlugin, inspect.isfunction):
        if not name.startswith("__"):
            assert getattr(type(wrapped), name) is not method, f"{name} is not delegated"
    session = ksa_session.Session(auth=wrapped)
    bare = inner.get_access(session).auth_token
    assert wrapped.get_token(session) == bare
    # keystoneauth's Session.get_token reads the headers: the token as it is sent.
    assert session.get_token() == bare + wrapped.scope.token_suffix
    assert wrapped.auth_ref is inner.auth_ref is not None
    assert wrapped.auth_url == inner.auth_url
    wrapped.auth_ref = None  # osc-lib sets it: it must reach the wrapped plugin
    assert inner.auth_ref is None
    rewrapped = scoped_auth(wrapped, ClientScope(parse("<glance: Paris>"), "Berlin"))
    assert rewrapped.auth is inner  # never nested
    assert len([r for r in site.data.received if is_token_request(r)]) == 1


def test_a_bad_scope_fails_before_any_request(site: Site) -> None:
    with pytest.raises(ScopeError, match="column 15"):
        scoped_session(site.password(), "<nova: Berlin&>", home="Berlin")
    assert site.data.received == []


# --- openstacksdk --------------------------------------------------------------


@pytest.fixture
def clouds(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    path = clouds_yaml(
        tmp_path / "clouds.yaml",
        {
            "berlin": cloud(site.auth_url, "Berlin"),
            "scoped": cloud(site.auth_url, "Berlin", scope="<nova: Berlin&Denver>"),
            "mapped": cloud(site.auth_url, "Berlin", scope={"nova": "Berlin&Denver"}),
            "bad": cloud(site.auth_url, "Berlin", scope="<nova: Berlin&>"),
            "hooked": cloud(
                site.auth_url,
                "Berlin",
                scope="<nova: Berlin&Denver>",
                vendor_hook="scoped_osc.sdk:vendor_hook",
            ),
        },
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    monkeypatch.setenv("HOME", str(tmp_path))
    return path


def test_connect_carries_the_scope_to_every_service(site: Site, clouds: Path) -> None:
    conn = connect(cloud="berlin", scope="{nova: Berlin&Denver}")
    try:
        assert len(list(conn.compute.servers())) == 2
        assert len(list(conn.image.images())) == 2
        assert len(list(conn.network.networks())) == 2
        assert len(list(conn.identity.users())) == 2
        assert list(conn.block_storage.volumes()) == []
        assert list(conn.placement.resource_providers()) == []
    finally:
        conn.close()
    assert {r.path for r in authenticated(site.data.received)} == PATHS
    assert_scoped(site)


@pytest.mark.parametrize("name", ["scoped", "mapped"])
def test_connect_honours_the_clouds_scope(site: Site, clouds: Path, name: str) -> None:
    conn = connect(cloud=name)
    try:
        assert len(list(conn.compute.servers())) == 2
    finally:
        conn.close()
    assert_scoped(site)


def test_connect_scope_argument_overrides_clouds_yaml(site: Site, clouds: Path) -> None:
    conn = connect(cloud="scoped", scope="<nova: Paris>")
    try:
        list(conn.compute.servers())
    finally:
        conn.close()
    assert_scoped(site, "<compute: Paris, *: Berlin>")


def test_connect_with_a_bad_scope_raises_before_any_request(site: Site, clouds: Path) -> None:
    with pytest.raises(ScopeError) as caught:
        connect(cloud="bad")
    assert str(caught.value).startswith("clouds.yaml, cloud 'bad', key 'scope': bad scope")
    with pytest.raises(ScopeError):
        connect(cloud="berlin", scope="<nova: Berlin&>")
    assert site.data.received == []


def test_plain_openstack_connect_with_the_vendor_hook_in_clouds_yaml(
    site: Site, clouds: Path
) -> None:
    conn = openstack.connect(cloud="hooked")
    try:
        assert len(list(conn.compute.servers())) == 2
    finally:
        conn.close()
    assert_scoped(site)


def test_a_plain_connection_carries_nothing(site: Site, clouds: Path) -> None:
    conn = connect(cloud="berlin")
    try:
        list(conn.compute.servers())
    finally:
        conn.close()
    for r in site.data.received:
        assert "x-scope" not in r.headers
        if "x-auth-token" in r.headers:
            assert split_token(r.headers["x-auth-token"])[1] is None
