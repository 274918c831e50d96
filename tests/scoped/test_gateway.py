"""The gateway end to end on loopback: real gateways (ASGI under uvicorn) in
front of real stand-in sites (docs/design.md §3, §4, §6, §8)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoped.carry import attach, encode_scope
from tests.federation import DOWN, Federation, federation
from tests.federation import scope_sites as sites_header
from tests.standin import make_items


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    with federation(
        overrides={
            "limits": {"max_fanout": 8, "max_merge_bytes": 200_000, "max_replay_bytes": 100_000}
        }
    ) as f:
        yield f


@pytest.fixture
def net(fed: Federation) -> Iterator[Federation]:
    fed.reset()
    yield fed
    fed.reset()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as c:
        yield c


def ids(resp: httpx.Response, key: str = "servers") -> list[str]:
    return [i["id"] for i in resp.json()[key]]


# --- forwarding --------------------------------------------------------------


def test_no_scope_serves_the_local_site(net: Federation, client: httpx.Client) -> None:
    net.sites["Berlin"].servers.extend(make_items("b", 2, seed="B"))
    resp = client.get(net.url("Berlin", "compute", "/v2.1/servers"))
    assert resp.status_code == 200
    assert len(ids(resp)) == 2
    assert resp.headers["x-scope"] == "<*: Berlin>"
    assert sites_header(resp) == {"Berlin": "200"}
    assert net.sites["Denver"].received == []


def test_remote_site_serves_it_and_query_method_body_pass_through(
    net: Federation, client: httpx.Client
) -> None:
    resp = client.post(
        net.url("Berlin", "compute", "/echo/a/b?x=1&y=%2F"),
        headers={"X-Scope": "<nova: Denver>", "X-Custom": "kept"},
        content=b"payload",
    )
    assert resp.status_code == 200
    assert resp.headers["x-scope"] == "<compute: Denver, *: Berlin>"
    echo = resp.json()
    assert echo["method"] == "POST"
    (seen,) = net.sites["Denver"].received
    assert seen.path.endswith("/echo/a/b")
    assert seen.query_string == "x=1&y=%2F"
    assert seen.headers["x-custom"] == "kept"
    assert seen.body_length == len(b"payload")
    assert "x-scoped-hop" not in seen.headers  # the remote gateway serves it and drops the mark
    assert net.sites["Berlin"].received == []


def test_a_forwarded_request_is_never_forwarded_again(
    net: Federation, client: httpx.Client
) -> None:
    # Denver's gateway would send this scope on to Berlin and Paris: the hop
    # header makes it serve locally instead, so each site sees exactly one call.
    resp = client.get(
        net.url("Berlin", "compute", "/echo/x"),
        headers={"X-Scope": "<nova: Denver&Paris>"},
    )
    assert resp.status_code == 200
    assert len(net.sites["Denver"].received) == 1
    assert len(net.sites["Paris"].received) == 1
    assert net.sites["Berlin"].received == []


def test_request_id_reaches_every_site(net: Federation, client: httpx.Client) -> None:
    # A well-formed id, as oslo.middleware accepts one (test_core.py checks
    # that an ill-formed one is replaced, not passed on).
    rid = "req-0123abcd-0123-4567-89ab-0123456789ab"
    client.get(
        net.url("Berlin", "compute", "/v2.1/servers"),
        headers={"X-Scope": "<nova: Berlin&Denver&Paris>", "X-OpenStack-Request-ID": rid},
    )
    for name in ("Berlin", "Denver", "Paris"):
        (seen,) = net.sites[name].received
        assert seen.headers["x-openstack-request-id"] == rid


def test_a_request_id_is_made_when_the_client_sends_none(
    net: Federation, client: httpx.Client
) -> None:
    client.get(
        net.url("Berlin", "compute", "/v2.1/servers"), headers={"X-Scope": "<nova: Berlin&Paris>"}
    )
    got = {net.sites[n].received[0].headers["x-openstack-request-id"] for n in ("Berlin", "Paris")}
    assert len(got) == 1
    assert got.pop().startswith("req-")


# --- fan-out (&) -------------------------------------------------------------


def test_fan_out_merges_lists_in_site_order(net: Federation, client: httpx.Client) -> None:
    b = make_items("b", 2, seed="B")
    d = make_items("d", 3, seed="D")
    net.sites["Berlin"].servers.extend(b)
    net.sites["Denver"].servers.extend(d)
    resp = client.get(
        net.url("Paris", "compute", "/v2.1/servers"),
        headers={"X-Scope": "<nova: Denver&Berlin>"},
    )
    assert resp.status_code == 200
    # nova lists newest first; site order is the scope's order.
    assert ids(resp) == [i["id"] for i in reversed(d)] + [i["id"] for i in reversed(b)]
    assert sites_header(resp) == {"Denver": "200", "Berlin": "200"}
    assert "servers_links" not in resp.json()


def test_fan_out_honours_sort_keys_across_sites(net: Federation, client: httpx.Client) -> None:
    net.sites["Berlin"].servers.extend(make_items("m", 4, seed="B"))
    net.sites["Denver"].servers.extend(make_items("a", 3, seed="D"))
    net.sites["Paris"].servers.extend(make_items("z", 2, seed="P"))
    resp = client.get(
        net.url("Berlin", "compute", "/v2.1/servers/detail?sort_key=name&sort_dir=asc"),
        headers={"X-Scope": "<nova: Berlin&Denver&Paris>"},
    )
    assert resp.status_code == 200, resp.text
    names = [s["name"] for s in resp.json()["servers"]]
    assert names == sorted(names)
    assert len(names) == 9


def test_glance_sort_parameter_is_honoured(net: Federation, client: httpx.Client) -> None:
    net.sites["Berlin"].images.extend(make_items("img-b", 3, seed="B"))
    net.sites["Denver"].images.extend(make_items("img-a", 3, seed="D"))
    resp = client.get(
        net.url("Berlin", "image", "/v2/images?sort=name:desc"),
        headers={"X-Scope": "<glance: Berlin&Denver>"},
    )
    names = [i["name"] for i in resp.json()["images"]]
    assert names == sorted(names, reverse=True)
    assert resp.json()["schema"] == "/v2/schemas/images"


def fill(fed: Federation, kind: str, sizes: dict[str, int]) -> set[str]:
    """Give each named site ``n`` items of ``kind``; the ids of them all."""
    ids: set[str] = set()
    for name, n in sizes.items():
        items = make_items(f"{name}-{kind}", n, seed=name)
        fed.sites[name].collection(kind).extend(items)
        ids.update(i["id"] for i in items)
    return ids


def walk(
    client: httpx.Client, fed: Federation, service: str, first: str, scope: str, key: str
) -> tuple[list[str], int]:
    """Follow next links through the gateway; (ids in order, pages)."""
    url: str | None = fed.url("Berlin", service, first)
    seen: list[str] = []
    pages = 0
    while url is not None and pages < 200:
        resp = client.get(url, headers={"X-Scope": scope})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        seen.extend(i["id"] for i in body[key])
        pages += 1
        if key == "images":
            nxt = body.get("next")
            url = fed.url("Berlin", "image", nxt) if nxt else None
        else:
            links = [ln["href"] for ln in body.get(f"{key}_links", []) if ln["rel"] == "next"]
            url = links[0] if links else None
            if url is not None:
                assert url.startswith(fed.gateways["Berlin"] + "/" + service)
    return seen, pages


@settings(max_examples=25)
@given(
    sizes=st.tuples(*(st.integers(0, 7) for _ in range(3))),
    limit=st.integers(1, 6),
    sort=st.sampled_from(["", "&sort_key=name&sort_dir=asc", "&sort_key=name&sort_dir=desc"]),
)
def test_paging_through_fan_out_returns_every_item_once(
    fed: Federation, sizes: tuple[int, int, int], limit: int, sort: str
) -> None:
    fed.reset()
    expected = fill(fed, "servers", dict(zip(fed.sites, sizes, strict=True)))
    with httpx.Client(timeout=20) as client:
        seen, pages = walk(
            client,
            fed,
            "compute",
            f"/v2.1/servers?limit={limit}{sort}",
            "<nova: Berlin&Denver&Paris>",
            "servers",
        )
    assert len(seen) == len(set(seen)), "an item came twice"
    assert set(seen) == expected
    assert pages <= len(expected) // limit + 4


@settings(max_examples=15)
@given(sizes=st.tuples(*(st.integers(0, 6) for _ in range(3))), limit=st.integers(1, 5))
def test_glance_paging_through_fan_out_returns_every_image_once(
    fed: Federation, sizes: tuple[int, int, int], limit: int
) -> None:
    fed.reset()
    expected = fill(fed, "images", dict(zip(fed.sites, sizes, strict=True)))
    with httpx.Client(timeout=20) as client:
        seen, _ = walk(
            client,
            fed,
            "image",
            f"/v2/images?limit={limit}",
            "<glance: Berlin&Denver&Paris>",
            "images",
        )
    assert sorted(seen) == sorted(expected)


def test_keystone_lists_merge_with_links(net: Federation, client: httpx.Client) -> None:
    net.sites["Berlin"].users.extend(make_items("alice", 1, seed="B"))
    net.sites["Denver"].users.extend(make_items("bob", 2, seed="D"))
    resp = client.get(
        net.url("Berlin", "identity", "/v3/users"), headers={"X-Scope": "<keystone: Berlin&Denver>"}
    )
    body = resp.json()
    assert len(body["users"]) == 3
    assert body["links"]["next"] is None
    assert body["links"]["self"].startswith(net.gateways["Berlin"] + "/identity/v3/users")


def test_reading_one_resource_with_fan_out(net: Federation, client: httpx.Client) -> None:
    only_denver = make_items("d", 1, seed="D")[0]
    shared = make_items("s", 1, seed="S")[0]
    net.sites["Denver"].servers.append(only_denver)
    net.sites["Paris"].servers.append({**shared, "name": "paris-copy"})
    net.sites["Denver"].servers.append({**shared, "name": "denver-copy"})
    scope = {"X-Scope": "<nova: Berlin&Denver&Paris>"}
    one = client.get(
        net.url("Berlin", "compute", f"/v2.1/servers/{only_denver['id']}"), headers=scope
    )
    assert one.status_code == 200
    assert one.json()["server"]["id"] == only_denver["id"]
    assert sites_header(one) == {"Berlin": "404", "Denver": "200", "Paris": "404"}
    both = client.get(net.url("Berlin", "compute", f"/v2.1/servers/{shared['id']}"), headers=scope)
    assert both.json()["server"]["name"] == "denver-copy"  # the leftmost
    none = client.get(net.url("Berlin", "compute", "/v2.1/servers/nope"), headers=scope)
    assert none.status_code == 404


def test_a_fan_out_create_answers_one_handle_for_every_replica(
    net: Federation, client: httpx.Client
) -> None:
    scope = {"X-Scope": "<nova: Paris&Denver>"}
    resp = client.post(
        net.url("Berlin", "compute", "/v2.1/servers"),
        headers=scope,
        json={"server": {"name": "vm1"}},
    )
    assert resp.status_code == 202
    assert [s["name"] for s in net.sites["Paris"].servers] == ["vm1"]
    assert [s["name"] for s in net.sites["Denver"].servers] == ["vm1"]
    paris, denver = net.sites["Paris"].servers[0]["id"], net.sites["Denver"].servers[0]["id"]
    server = resp.json()["server"]
    assert server["OS-SCOPE:sites"] == {"Paris": paris, "Denver": denver}
    handle = server["id"]
    assert handle.startswith("scoped.") and paris not in str(server["links"])
    # The handle reaches each replica by its own id, whatever the scope.
    shown = client.get(net.url("Berlin", "compute", f"/v2.1/servers/{handle}"), headers=scope)
    assert shown.status_code == 200
    assert shown.json()["server"]["id"] == handle
    assert sites_header(shown) == {"Paris": "200", "Denver": "200"}
    denver_only = client.get(
        net.url("Berlin", "compute", f"/v2.1/servers/{handle}"),
        headers={"X-Scope": "<nova: Denver>"},
    )
    assert denver_only.json()["server"]["id"] == denver
    gone = client.delete(net.url("Berlin", "compute", f"/v2.1/servers/{handle}"), headers=scope)
    assert gone.status_code == 204
    assert net.sites["Paris"].servers == [] and net.sites["Denver"].servers == []
    # A site of the scope without a replica is reported, not "not here".
    again = client.delete(
        net.url("Berlin", "compute", f"/v2.1/servers/{handle}"),
        headers={"X-Scope": "<nova: Paris&Berlin>"},
    )
    assert again.status_code == 404
    assert sites_header(again) == {"Paris": "404", "Berlin": "no-replica"}


def test_a_partial_create_is_undone_and_reported(net: Federation, client: httpx.Client) -> None:
    net.sites["Paris"].fail_status = 500
    resp = client.post(
        net.url("Berlin", "compute", "/v2.1/servers"),
        headers={"X-Scope": "<nova: Denver&Paris>"},
        json={"server": {"name": "vm1"}},
    )
    assert resp.status_code == 502
    err = resp.json()["error"]
    assert "Denver" in err["message"] and "Paris" in err["message"]
    by_site = {s["site"]: s for s in err["sites"] if not s["outcome"].startswith("undo")}
    undo = [s for s in err["sites"] if s["outcome"].startswith("undo")]
    assert [(s["site"], s["status"]) for s in undo] == [("Denver", 204)]
    created = [r for r in net.sites["Denver"].requests("POST") if r.path.endswith("/servers")]
    assert len(created) == 1
    assert by_site["Denver"]["status"] == 202
    assert by_site["Denver"]["undone"] is True  # nothing done is hidden
    assert by_site["Paris"]["status"] == 500
    assert net.sites["Denver"].servers == [], "the answer names nothing, so nothing is left"


def test_strict_by_default_and_optional_children_tolerated(
    net: Federation, client: httpx.Client
) -> None:
    net.sites["Berlin"].servers.extend(make_items("b", 2, seed="B"))
    strict = client.get(
        net.url("Berlin", "compute", "/v2.1/servers"), headers={"X-Scope": f"<nova: Berlin&{DOWN}>"}
    )
    assert strict.status_code == 502
    assert DOWN in strict.json()["error"]["message"]
    assert sites_header(strict)[DOWN] == "refused"
    lenient = client.get(
        net.url("Berlin", "compute", "/v2.1/servers"),
        headers={"X-Scope": f"<nova: Berlin&{DOWN}?>"},
    )
    assert lenient.status_code == 200
    assert len(ids(lenient)) == 2
    assert sites_header(lenient) == {"Berlin": "200", DOWN: "refused"}


def test_merge_body_bound_gives_a_clear_502(net: Federation, client: httpx.Client) -> None:
    net.sites["Berlin"].servers.extend(make_items("big", 1500, seed="B", pad="x" * 200))
    resp = client.get(
        net.url("Berlin", "compute", "/v2.1/servers/detail"),
        headers={"X-Scope": "<nova: Berlin&Denver>"},
    )
    assert resp.status_code == 502
    assert "merge limit" in resp.json()["error"]["message"]


# --- failover (|) ------------------------------------------------------------


@pytest.mark.parametrize("fault", ["refused", "500", "timeout", "404"])
def test_failover_moves_on(net: Federation, client: httpx.Client, fault: str) -> None:
    target = DOWN if fault == "refused" else "Denver"
    if fault == "500":
        net.sites["Denver"].fail_status = 500
    elif fault == "timeout":
        net.sites["Denver"].hang = True
    vm = make_items("p", 1, seed="P")[0]
    net.sites["Paris"].servers.append(vm)
    resp = client.get(
        net.url("Berlin", "compute", f"/v2.1/servers/{vm['id']}"),
        headers={"X-Scope": f"<nova: {target}|Paris>"},
    )
    assert resp.status_code == 200
    assert resp.json()["server"]["id"] == vm["id"]
    outcomes = sites_header(resp)
    expected = {"refused": "refused", "500": "500", "timeout": "timeout", "404": "404"}[fault]
    assert outcomes == {target: expected, "Paris": "200"}


def test_failover_stops_at_the_first_success(net: Federation, client: httpx.Client) -> None:
    resp = client.get(
        net.url("Berlin", "compute", "/v2.1/servers"), headers={"X-Scope": "<nova: Denver|Paris>"}
    )
    assert sites_header(resp) == {"Denver": "200"}  # Paris was not needed: not listed
    assert net.sites["Paris"].received == []


def test_all_failed_lists_every_site(net: Federation, client: httpx.Client) -> None:
    net.sites["Denver"].fail_status = 503
    resp = client.get(
        net.url("Berlin", "compute", "/v2.1/servers"),
        headers={"X-Scope": f"<nova: {DOWN}|Denver>"},
    )
    assert resp.status_code == 502
    message = resp.json()["error"]["message"]
    assert f"{DOWN}: refused" in message and "Denver: 503" in message


def test_non_idempotent_request_is_not_replayed_after_the_site_may_have_done_it(
    net: Federation, client: httpx.Client
) -> None:
    net.sites["Denver"].fail_status = 500
    resp = client.post(
        net.url("Berlin", "compute", "/v2.1/servers"),
        headers={"X-Scope": "<nova: Denver|Paris>"},
        json={"server": {"name": "once"}},
    )
    assert resp.status_code == 502
    assert "not idempotent" in resp.json()["error"]["message"]
    assert net.sites["Paris"].received == []


@pytest.mark.parametrize("fault", ["refused", "503"])
def test_non_idempotent_request_fails_over_when_surely_not_done(
    net: Federation, client: httpx.Client, fault: str
) -> None:
    first = DOWN if fault == "refused" else "Denver"
    net.sites["Denver"].fail_status = 503
    resp = client.post(
        net.url("Berlin", "compute", "/v2.1/servers"),
        headers={"X-Scope": f"<nova: {first}|Paris>"},
        json={"server": {"name": "once"}},
    )
    assert resp.status_code == 202
    assert [s["name"] for s in net.sites["Paris"].servers] == ["once"]


# --- bounds, errors, tokens -----------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "fragment"),
    [
        ("<nova: Berln>", "did you mean 'Berlin'"),
        ("<nova: Berlin&&Denver>", "expected a site name"),
        ("<nova: Berlin&" + "&".join(f'"s{i}"' for i in range(3)) + ">", "unknown site"),
        ("<" + "x" * 5000 + ">", "at most 4096"),
    ],
)
def test_bad_scopes_are_400_with_openstack_error_bodies(
    net: Federation, client: httpx.Client, scope: str, fragment: str
) -> None:
    resp = client.get(net.url("Berlin", "compute", "/v2.1/servers"), headers={"X-Scope": scope})
    assert resp.status_code == 400
    assert fragment in resp.json()["error"]["message"]
    assert all(not d.received for d in net.sites.values())


def test_fan_out_width_is_bounded(net: Federation) -> None:
    # max_fanout is 8 in this federation; a plan over more sites is refused.
    many = tuple(f"S{i}" for i in range(9))
    overrides = {"limits": {"max_fanout": 8}}
    with federation(names=many, overrides=overrides) as wide, httpx.Client(timeout=20) as c:
        resp = c.get(wide.url("S0", "compute", "/v2.1/servers"), headers={"X-Scope": "<nova: *>"})
    assert resp.status_code == 400
    assert "at most 8" in resp.json()["error"]["message"]


def test_no_url_comes_from_the_request(net: Federation, client: httpx.Client) -> None:
    resp = client.get(
        net.url("Berlin", "compute", "/v2.1/servers"),
        headers={"X-Scope": '<nova: "http://127.0.0.1:1/">'},
    )
    assert resp.status_code == 400
    assert "unknown site" in resp.json()["error"]["message"]


def test_scope_rides_on_the_token_and_is_stripped_for_identity_only(
    net: Federation, client: httpx.Client
) -> None:
    token = attach("gAAAAAtoken", "<nova: Denver>")
    compute = client.get(net.url("Berlin", "compute", "/echo/c"), headers={"X-Auth-Token": token})
    assert compute.headers["x-scope"] == "<compute: Denver, *: Berlin>"
    (seen,) = net.sites["Denver"].received
    # Passed on completed (issue 14): Denver, and the calls its services make
    # with the token, read the scope the user meant, home site included.
    assert seen.headers["x-auth-token"] == attach("gAAAAAtoken", "<compute: Denver, *: Berlin>")
    net.reset()
    client.get(
        net.url("Berlin", "identity", "/v3/auth/tokens"),
        headers={"X-Auth-Token": token, "X-Subject-Token": attach("gAAAAAuser", "<nova: Paris>")},
    )
    (seen,) = net.sites["Berlin"].received
    assert seen.headers["x-auth-token"] == "gAAAAAtoken"
    assert seen.headers["x-subject-token"] == "gAAAAAuser"


def test_a_service_token_sent_to_another_site_names_its_keystone(
    net: Federation, client: httpx.Client
) -> None:
    # nova-api sends its own service token beside the user's (keystonemiddleware's
    # user plugin): at another site, its validation must come back here.
    headers = {"X-Scope": "<nova: Denver>", "X-Service-Token": "gAAAAAsvc"}
    client.get(net.url("Berlin", "compute", "/echo/s"), headers=headers)
    (seen,) = net.sites["Denver"].received
    assert seen.headers["x-service-token"] == attach("gAAAAAsvc", "<identity: Berlin>")
    net.reset()
    client.get(net.url("Berlin", "compute", "/echo/s"), headers={"X-Service-Token": "gAAAAAsvc"})
    (seen,) = net.sites["Berlin"].received
    assert seen.headers["x-service-token"] == "gAAAAAsvc"  # served here: as it came


def test_x_scope_wins_over_the_token_suffix(net: Federation, client: httpx.Client) -> None:
    resp = client.get(
        net.url("Berlin", "compute", "/echo/x"),
        headers={"X-Scope": "<nova: Paris>", "X-Auth-Token": attach("t", "<nova: Denver>")},
    )
    assert sites_header(resp) == {"Paris": "200"}


def test_a_broken_token_suffix_is_a_400(net: Federation, client: httpx.Client) -> None:
    resp = client.get(
        net.url("Berlin", "compute", "/echo/x"), headers={"X-Auth-Token": "tok!scope!%%%"}
    )
    assert resp.status_code == 400
    assert "base64url" in resp.json()["error"]["message"]
    good = client.get(
        net.url("Berlin", "compute", "/echo/x"),
        headers={"X-Auth-Token": "tok!scope!" + encode_scope("<nova: Paris>")},
    )
    assert sites_header(good) == {"Paris": "200"}


def test_health_metrics_and_unknown_paths(net: Federation, client: httpx.Client) -> None:
    base = net.gateways["Berlin"]
    health = client.get(f"{base}/healthz").json()
    assert (health["status"], health["site"]) == ("ok", "Berlin")
    assert list(health["sites"]) == [*net.sites, DOWN]  # every site, in registry order
    assert set(health["sites"].values()) == {"closed"}
    client.get(net.url("Berlin", "compute", "/v2.1/servers"), headers={"X-Scope": "<nova: Denver>"})
    metrics = client.get(f"{base}/metrics").text
    assert 'scoped_requests_total{method="GET",outcome="2xx",service="compute"}' in metrics
    assert (
        'scoped_upstream_requests_total{outcome="200",service="compute",site="Denver"}' in metrics
    )
    assert "scoped_upstream_seconds_bucket" in metrics
    missing = client.get(f"{base}/nothing/here")
    assert missing.status_code == 404
    assert "/compute" in json.loads(missing.text)["error"]["message"]


def test_neutron_lists_merge_with_their_links(net: Federation, client: httpx.Client) -> None:
    expected = fill(net, "networks", {"Berlin": 3, "Denver": 4})
    seen, pages = walk(
        client, net, "network", "/v2.0/networks?limit=2", "<neutron: Berlin&Denver>", "networks"
    )
    assert sorted(seen) == sorted(expected)
    assert pages >= 4


def test_a_large_body_streams_to_every_site_of_a_fan_out(
    net: Federation, client: httpx.Client
) -> None:
    body = bytes(range(256)) * 600  # 153 600 bytes, over max_replay_bytes (100 000)
    resp = client.post(
        net.url("Berlin", "compute", "/echo/big"),
        headers={"X-Scope": "<nova: Denver&Paris>"},
        content=body,
    )
    assert resp.status_code == 200
    for site in ("Denver", "Paris"):
        [got] = net.sites[site].received
        assert (got.body_length, got.body_sha256) == (len(body), hashlib.sha256(body).hexdigest())


def test_an_upload_to_three_sites_goes_at_the_slowest_pace_and_survives_one_dying(
    net: Federation, client: httpx.Client
) -> None:
    scope = {"X-Scope": "<glance: Berlin&Denver&Paris>"}
    created = client.post(
        net.url("Berlin", "image", "/v2/images"), headers=scope, json={"name": "debian"}
    )
    assert created.status_code == 201
    image = created.json()
    # Glance takes the client's ID: every replica has the same one.
    assert {i["id"] for s in ("Berlin", "Denver", "Paris") for i in net.sites[s].images} == {
        image["id"]
    }
    assert image["OS-SCOPE:sites"] == dict.fromkeys(("Berlin", "Denver", "Paris"), image["id"])
    net.sites["Denver"].read_pause = 0.002  # slow
    net.sites["Paris"].die_after = 300_000  # dies in the middle
    data = bytes(range(256)) * 4096  # 1 MiB
    url = net.url("Berlin", "image", f"/v2/images/{image['id']}/file")
    resp = client.put(
        url, headers=scope, content=iter([data[i : i + 65536] for i in range(0, len(data), 65536)])
    )
    assert resp.status_code == 502
    outcomes = sites_header(resp)
    assert outcomes["Berlin"] == outcomes["Denver"] == "204"
    assert outcomes["Paris"] == "502"  # its gateway saw the site break off
    digest = hashlib.sha256(data).hexdigest()
    for site in ("Berlin", "Denver"):
        assert [u.sha256 for u in net.sites[site].uploads] == [digest]
    assert "Paris" in resp.json()["error"]["message"]


def test_a_large_body_streams_to_one_site_and_fails_over_before_it_starts(
    net: Federation, client: httpx.Client
) -> None:
    body = b"y" * 150_000
    resp = client.post(
        net.url("Berlin", "compute", "/echo/big"),
        headers={"X-Scope": f"<nova: {DOWN}|Paris>"},
        content=body,
    )
    assert resp.status_code == 200
    assert sites_header(resp) == {DOWN: "refused", "Paris": "200"}
    (seen,) = net.sites["Paris"].received
    assert seen.body_length == len(body)


def test_a_foreign_marker_is_a_400(net: Federation, client: httpx.Client) -> None:
    resp = client.get(
        net.url("Berlin", "compute", "/v2.1/servers?marker=sc1.bm90LWpzb24"),
        headers={"X-Scope": "<nova: Berlin&Denver>"},
    )
    assert resp.status_code == 400
    assert "marker" in resp.json()["error"]["message"]
