"""``&`` writes through the core's in-memory seam (scoped.writes,
scoped.references): every site gets its own request (its own flavor ID, its
own replica ID in the path, the same client-chosen ID), a reference that
means nothing somewhere refuses the write before anything is sent, a
create that fails at a required site is undone where it was done."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from scoped_grammar import STAR, Site, parse

from scoped.carry import scope_of_token
from scoped.handles import make_handle, read_handle
from scoped.http import Response
from scoped.memory import Exchange, MemoryReply, MemoryUpstream
from scoped.memory import json_reply as reply
from scoped.writes import SITES_KEY
from tests.scoped.test_core import Core, body_of, origin, sites_of

SERVERS = "/v2.1/servers"
COMPUTE = "/compute/v2.1"
_ids = itertools.count(1)


class Compute:
    """A Nova in memory: flavors by ID, servers it creates (a fresh ID each),
    shows and deletes; every request it got is kept in :attr:`seen`."""

    def __init__(
        self,
        site: str,
        flavors: dict[str, str] | None = None,
        create_status: int = 202,
        status: str = "ACTIVE",
    ) -> None:
        self.site = site
        self.flavors = [{"id": i, "name": n} for i, n in (flavors or {}).items()]
        self.create_status = create_status
        self.status = status
        self.servers: dict[str, dict[str, Any]] = {}
        self.seen: list[Exchange] = []

    def requests(self, method: str) -> list[Exchange]:
        return [e for e in self.seen if e.method == method]

    def posted(self) -> list[Any]:
        return [orjson.loads(e.body) for e in self.requests("POST")]

    def add_server(self, server_id: str) -> None:
        self.servers[server_id] = {"id": server_id, "name": "vm", "status": self.status}

    async def __call__(self, ex: Exchange) -> MemoryReply:
        self.seen.append(ex)
        path = ex.path
        if not path.startswith(COMPUTE):
            return reply(404, {"itemNotFound": {"message": f"{path} not found"}})
        rest = path[len(COMPUTE) :].rstrip("/")
        if ex.method == "GET" and rest == "/flavors/detail":
            return reply(200, {"flavors": self.flavors})
        if ex.method == "GET" and rest.startswith("/flavors/"):
            wanted = rest.rsplit("/", 1)[-1]
            for flavor in self.flavors:
                if flavor["id"] == wanted:
                    return reply(200, {"flavor": flavor})
            return reply(404, {"itemNotFound": {"message": f"flavor {wanted} not found"}})
        if ex.method == "POST" and rest == "/flavors":
            flavor = dict(orjson.loads(ex.body)["flavor"])
            flavor["id"] = flavor.get("id") or f"{self.site.lower()}-flavor-{next(_ids)}"
            self.flavors.append(flavor)
            return reply(200, {"flavor": flavor})
        if ex.method == "POST" and rest == "/servers":
            if self.create_status >= 400:
                return reply(self.create_status, {"computeFault": {"message": "boom"}})
            server_id = f"{self.site.lower()}-{next(_ids):04d}"
            self.add_server(server_id)
            href = f"{origin(self.site)}{COMPUTE}/servers/{server_id}"
            links = [{"rel": "self", "href": href}]
            return reply(202, {"server": {"id": server_id, "links": links}}, [("location", href)])
        if ex.method == "GET" and rest == "/servers/detail":
            name = ex.query.get("name")
            found = [v for v in self.servers.values() if name is None or v["name"] == name]
            return reply(200, {"servers": found})
        if rest.startswith("/servers/"):
            wanted = rest.split("/")[2]
            server = self.servers.get(wanted)
            if server is None:
                return reply(404, {"itemNotFound": {"message": f"server {wanted} not found"}})
            if ex.method == "DELETE":
                del self.servers[wanted]
                return MemoryReply(204)
            if ex.method == "GET":
                return reply(200, {"server": server})
        return reply(405, {"badMethod": {"message": f"{ex.method} {path}"}})


def core(*sites: Compute) -> Core:
    return Core(MemoryUpstream({origin(s.site): s for s in sites}))


def create(c: Core, scope: str, flavor: str = "b-small") -> Response:
    body = {"server": {"name": "vm", "flavorRef": flavor}}
    return c.request("POST", SERVERS, scope, body=orjson.dumps(body))


def flavor_refs(site: Compute) -> list[str]:
    return [b["server"]["flavorRef"] for b in site.posted()]


# -- references resolved per site ------------------------------------------


def test_each_site_gets_its_own_flavor_and_the_answer_names_every_replica() -> None:
    berlin = Compute("Berlin", {"b-small": "small", "b-big": "big"})
    denver = Compute("Denver", {"d-big": "big", "d-small": "small"})
    resp = create(core(berlin, denver), "<nova: Berlin&Denver>")
    assert resp.status == 202, resp.body
    assert flavor_refs(berlin) == ["b-small"]
    assert flavor_refs(denver) == ["d-small"], "Denver gets the ID of its own 'small'"
    server = body_of(resp)["server"]
    (berlin_id,) = berlin.servers
    (denver_id,) = denver.servers
    assert server[SITES_KEY] == {"Berlin": berlin_id, "Denver": denver_id}
    assert server["id"].startswith("scoped.")
    assert read_handle(server["id"]) == {"Berlin": berlin_id, "Denver": denver_id}
    # The handle stands for the replicas in the links and in Location too.
    assert server["links"][0]["href"].endswith(f"/servers/{server['id']}")
    assert dict(resp.headers)["location"].endswith(f"/servers/{server['id']}")
    assert sites_of(resp) == {"Berlin": "202", "Denver": "202"}


def test_a_flavor_id_that_means_the_same_everywhere_is_sent_as_it_is() -> None:
    berlin = Compute("Berlin", {"42": "small"})
    denver = Compute("Denver", {"42": "small"})
    resp = create(core(berlin, denver), "<nova: Berlin&Denver>", flavor="42")
    assert resp.status == 202
    assert flavor_refs(berlin) == ["42"] and flavor_refs(denver) == ["42"]
    assert [e.path for e in denver.requests("GET")] == [f"{COMPUTE}/flavors/42"]


def test_a_flavor_a_site_has_no_match_for_refuses_the_write_everywhere() -> None:
    berlin = Compute("Berlin", {"b-small": "small"})
    denver = Compute("Denver", {"d-big": "big"})
    c = core(berlin, denver)
    resp = create(c, "<nova: Berlin&Denver>")
    assert resp.status == 400
    message = body_of(resp)["error"]["message"]
    assert "Denver" in message and "'small'" in message, message
    assert "nothing was written" in message
    assert [e.method for e in c.upstream.calls if e.method != "GET"] == []
    assert berlin.requests("POST") == [] and denver.requests("POST") == []


def test_two_flavors_of_the_name_at_a_site_refuse_the_write() -> None:
    berlin = Compute("Berlin", {"b-small": "small"})
    denver = Compute("Denver", {"d-1": "small", "d-2": "small"})
    c = core(berlin, denver)
    resp = create(c, "<nova: Berlin&Denver>")
    assert resp.status == 400
    assert "Denver has 2 flavors named 'small'" in body_of(resp)["error"]["message"]
    assert [e for e in c.upstream.calls if e.method == "POST"] == []


def test_a_flavor_no_site_has_refuses_the_write() -> None:
    berlin = Compute("Berlin", {"b-small": "small"})
    denver = Compute("Denver", {"d-small": "small"})
    c = core(berlin, denver)
    resp = create(c, "<nova: Berlin&Denver>", flavor="nope")
    assert resp.status == 400
    assert "no flavor 'nope'" in body_of(resp)["error"]["message"]
    assert [e for e in c.upstream.calls if e.method == "POST"] == []


# -- all or nothing ---------------------------------------------------------


def test_a_create_that_fails_at_a_required_site_is_undone_where_it_was_done() -> None:
    berlin = Compute("Berlin", {"b-small": "small"})
    denver = Compute("Denver", {"d-small": "small"}, create_status=500)
    resp = create(core(berlin, denver), "<nova: Berlin&Denver>")
    assert resp.status == 502
    (berlin_post,) = berlin.requests("POST")
    (berlin_delete,) = berlin.requests("DELETE")
    created = orjson.loads(berlin_post.body)  # what Berlin was asked; its ID:
    assert created["server"]["flavorRef"] == "b-small"
    assert berlin.servers == {}, "Berlin's server is deleted again"
    assert berlin_delete.path.startswith(f"{COMPUTE}/servers/berlin-")
    error = body_of(resp)["error"]
    by_site: dict[str, list[dict[str, Any]]] = {}
    for entry in error["sites"]:
        by_site.setdefault(entry["site"], []).append(entry)
    assert by_site["Berlin"] and all(e.get("undone") is True for e in by_site["Berlin"])
    assert {e["id"] for e in by_site["Berlin"]} == {berlin_delete.path.rsplit("/", 1)[-1]}
    assert [e.get("status") for e in by_site["Denver"]] == [500]
    assert not any(e.get("undone") for e in by_site["Denver"])
    assert "undone" in error["message"]
    assert len(denver.requests("POST")) == 1, "a failed create is not tried again"
    assert denver.requests("DELETE") == [], "nothing to undo where nothing was made"


def test_an_optional_site_that_fails_keeps_the_write_where_it_was_done() -> None:
    berlin = Compute("Berlin", {"b-small": "small"})
    denver = Compute("Denver", {"d-small": "small"}, create_status=500)
    resp = create(core(berlin, denver), "<nova: Berlin&Denver?>")
    assert resp.status == 202
    (berlin_id,) = berlin.servers
    server = body_of(resp)["server"]
    # One replica: its own ID, which names Berlin's server alone.
    assert server["id"] == berlin_id
    assert read_handle(server["id"]) is None
    assert berlin.requests("DELETE") == [] and denver.requests("DELETE") == []
    assert sites_of(resp) == {"Berlin": "202", "Denver": "500"}


def test_the_handle_names_only_the_sites_that_made_a_replica() -> None:
    berlin = Compute("Berlin", {"b-small": "small"})
    denver = Compute("Denver", {"d-small": "small"})
    paris = Compute("Paris", {"p-small": "small"}, create_status=500)
    resp = create(core(berlin, denver, paris), "<nova: Berlin&Denver&Paris?>")
    assert resp.status == 202
    server = body_of(resp)["server"]
    (berlin_id,) = berlin.servers
    (denver_id,) = denver.servers
    assert read_handle(server["id"]) == {"Berlin": berlin_id, "Denver": denver_id}
    assert server[SITES_KEY] == {"Berlin": berlin_id, "Denver": denver_id}
    assert flavor_refs(paris) == ["p-small"]
    assert not any(s.requests("DELETE") for s in (berlin, denver, paris))


# -- by handle --------------------------------------------------------------


def replicas(berlin: Compute, denver: Compute) -> str:
    berlin.add_server("b-vm")
    denver.add_server("d-vm")
    return make_handle({"Berlin": "b-vm", "Denver": "d-vm"})


def test_a_read_by_handle_reaches_every_replica_under_its_own_id() -> None:
    berlin, denver = Compute("Berlin"), Compute("Denver")
    handle = replicas(berlin, denver)
    resp = core(berlin, denver).request("GET", f"{SERVERS}/{handle}", "<nova: Berlin&Denver>")
    assert resp.status == 200
    assert [e.path for e in berlin.seen] == [f"{COMPUTE}/servers/b-vm"]
    assert [e.path for e in denver.seen] == [f"{COMPUTE}/servers/d-vm"]
    server = body_of(resp)["server"]
    assert server["id"] == handle
    assert server[SITES_KEY] == {"Berlin": "b-vm", "Denver": "d-vm"}
    assert server["status"] == "ACTIVE"


def test_replicas_not_yet_all_active_read_as_the_laggards_status() -> None:
    berlin, denver = Compute("Berlin", status="ACTIVE"), Compute("Denver", status="BUILD")
    handle = replicas(berlin, denver)
    resp = core(berlin, denver).request("GET", f"{SERVERS}/{handle}", "<nova: Berlin&Denver>")
    assert resp.status == 200
    assert body_of(resp)["server"]["status"] == "BUILD"


def test_one_broken_replica_makes_the_resource_broken() -> None:
    berlin = Compute("Berlin", status="BUILD")
    denver = Compute("Denver", status="ERROR")
    handle = replicas(berlin, denver)
    resp = core(berlin, denver).request("GET", f"{SERVERS}/{handle}", "<nova: Berlin&Denver>")
    assert resp.status == 200
    assert body_of(resp)["server"]["status"] == "ERROR"


def test_a_read_by_handle_where_one_replica_is_gone_is_the_others_body() -> None:
    berlin, denver = Compute("Berlin"), Compute("Denver")
    handle = replicas(berlin, denver)
    del denver.servers["d-vm"]
    resp = core(berlin, denver).request("GET", f"{SERVERS}/{handle}", "<nova: Berlin&Denver>")
    assert resp.status == 200
    assert [e.path for e in denver.seen] == [f"{COMPUTE}/servers/d-vm"]
    assert body_of(resp)["server"][SITES_KEY] == {"Berlin": "b-vm"}
    assert sites_of(resp) == {"Berlin": "200", "Denver": "404"}


def test_a_delete_by_handle_deletes_every_replica() -> None:
    berlin, denver = Compute("Berlin"), Compute("Denver")
    handle = replicas(berlin, denver)
    resp = core(berlin, denver).request("DELETE", f"{SERVERS}/{handle}", "<nova: Berlin&Denver>")
    assert resp.status == 204
    assert berlin.servers == {} and denver.servers == {}
    assert [e.path for e in berlin.seen] == [f"{COMPUTE}/servers/b-vm"]
    assert [e.path for e in denver.seen] == [f"{COMPUTE}/servers/d-vm"]


def test_a_write_by_handle_to_a_site_without_a_replica_is_reported() -> None:
    berlin, denver, paris = Compute("Berlin"), Compute("Denver"), Compute("Paris")
    handle = replicas(berlin, denver)
    c = core(berlin, denver, paris)
    resp = c.request("DELETE", f"{SERVERS}/{handle}", "<nova: Berlin&Denver&Paris>")
    assert resp.status >= 400
    assert paris.seen == [], "Paris has no replica: it is not asked"
    assert sites_of(resp)["Paris"] == "no-replica"


# -- the same client-chosen ID ----------------------------------------------


def test_a_flavor_create_gets_the_same_id_at_every_site() -> None:
    berlin, denver = Compute("Berlin"), Compute("Denver")
    body = {"flavor": {"name": "x", "ram": 512, "vcpus": 1, "disk": 1, "id": None}}
    resp = core(berlin, denver).request(
        "POST", "/v2.1/flavors", "<nova: Berlin&Denver>", body=orjson.dumps(body)
    )
    assert resp.status == 200, resp.body
    (at_berlin,) = [b["flavor"] for b in berlin.posted()]
    (at_denver,) = [b["flavor"] for b in denver.posted()]
    assert at_berlin["id"] is not None and at_berlin["id"] not in ("", "auto")
    assert at_berlin["id"] == at_denver["id"]
    assert at_berlin["name"] == at_denver["name"] == "x"
    flavor = body_of(resp)["flavor"]
    assert flavor["id"] == at_berlin["id"], "one ID for all: no handle needed"
    assert flavor[SITES_KEY] == {"Berlin": at_berlin["id"], "Denver": at_berlin["id"]}


def test_a_client_chosen_flavor_id_is_kept() -> None:
    berlin, denver = Compute("Berlin"), Compute("Denver")
    body = {"flavor": {"name": "x", "id": "my-flavor"}}
    resp = core(berlin, denver).request(
        "POST", "/v2.1/flavors", "<nova: Berlin&Denver>", body=orjson.dumps(body)
    )
    assert resp.status == 200
    assert [b["flavor"]["id"] for b in berlin.posted() + denver.posted()] == ["my-flavor"] * 2


# -- the scope each branch carries ------------------------------------------


def test_each_branch_carries_a_scope_served_at_its_own_site() -> None:
    berlin = Compute("Berlin", {"b-small": "small"})
    denver = Compute("Denver", {"d-small": "small"})
    resp = create(core(berlin, denver), "<nova: Berlin&Denver>")
    assert resp.status == 202
    for site, other in ((denver, "Denver"), (berlin, "Berlin")):
        (post,) = site.requests("POST")
        token = post.header("x-auth-token")
        assert token is not None and token.startswith("t!scope!")
        carried = scope_of_token(token)
        assert carried is not None
        scope = parse(carried)
        assert scope.get(STAR) == Site(other), carried
        assert scope.get("compute") == Site(other), carried
        assert scope.get("identity") == Site("Berlin"), carried


# -- the handle in the answer -----------------------------------------------


def aggregates(ids: dict[str, object]) -> Core:
    """Sites that create a Nova host aggregate: integer IDs, a timestamp."""

    def site(name: str) -> Any:
        async def handler(ex: Exchange) -> MemoryReply:
            created = {"id": ids[name], "name": "agg", "created_at": "2016-12-27T22:51:32.000000"}
            href = f"{origin(name)}{COMPUTE}/os-aggregates/{ids[name]}"
            return reply(200, {"aggregate": created}, [("location", href)])

        return handler

    return Core(MemoryUpstream({origin(s): site(s) for s in ids}))


def create_aggregate(c: Core) -> Response:
    body = orjson.dumps({"aggregate": {"name": "agg"}})
    return c.request("POST", "/v2.1/os-aggregates", "<nova: Berlin&Denver>", body=body)


def test_the_handle_replaces_the_id_and_nothing_else() -> None:
    resp = create_aggregate(aggregates({"Berlin": "1", "Denver": "2"}))
    assert resp.status == 200
    aggregate = body_of(resp)["aggregate"]
    handle = make_handle({"Berlin": "1", "Denver": "2"})
    assert aggregate["id"] == handle
    location = dict(resp.headers)["location"]
    assert (aggregate["created_at"], location) == (
        "2016-12-27T22:51:32.000000",
        f"http://gw.berlin.test/compute/v2.1/os-aggregates/{handle}",
    )


def test_replicas_with_integer_ids_are_answered_with_a_handle() -> None:
    resp = create_aggregate(aggregates({"Berlin": 1, "Denver": 2}))
    assert resp.status == 200
    aggregate = body_of(resp)["aggregate"]
    assert aggregate["id"] == make_handle({"Berlin": "1", "Denver": "2"})
    assert aggregate[SITES_KEY] == {"Berlin": "1", "Denver": "2"}


# -- a lookup by name under & finds one resource ----------------------------


def test_a_list_filtered_by_name_folds_the_replicas_into_one_item() -> None:
    berlin, denver = Compute("Berlin"), Compute("Denver", status="BUILD")
    c = core(berlin, denver)
    berlin.add_server("b-1")
    denver.add_server("d-1")
    denver.servers["d-2"] = {"id": "d-2", "name": "other", "status": "ACTIVE"}
    scope = "<nova: Berlin&Denver>"
    found = c.request("GET", "/v2.1/servers/detail", scope, query="name=vm")
    [item] = body_of(found)["servers"]
    assert read_handle(item["id"]) == {"Berlin": "b-1", "Denver": "d-1"}
    assert item[SITES_KEY] == {"Berlin": "b-1", "Denver": "d-1"}
    assert item["status"] == "BUILD", "the logical server is not ACTIVE until every replica is"
    # Unfiltered, each replica is its own item and says where it lives.
    listed = body_of(c.request("GET", "/v2.1/servers/detail", scope))["servers"]
    assert sorted((i["id"], i["OS-SCOPE:site"]) for i in listed) == [
        ("b-1", "Berlin"),
        ("d-1", "Denver"),
        ("d-2", "Denver"),
    ]
    # What the lookup found deletes every replica.
    gone = c.request("DELETE", f"/v2.1/servers/{item['id']}", scope)
    assert gone.status == 204
    assert "vm" not in {v["name"] for v in [*berlin.servers.values(), *denver.servers.values()]}


def test_two_items_of_one_name_at_one_site_are_not_folded() -> None:
    berlin, denver = Compute("Berlin"), Compute("Denver")
    c = core(berlin, denver)
    berlin.add_server("b-1")
    berlin.add_server("b-2")
    denver.add_server("d-1")
    found = c.request("GET", "/v2.1/servers/detail", "<nova: Berlin&Denver>", query="name=vm")
    ids = [i["id"] for i in body_of(found)["servers"]]
    assert ids == ["b-1", "b-2", "d-1"], "Berlin's two are two resources: still ambiguous"


def test_a_replica_handle_as_a_reference_gives_each_site_its_own_id() -> None:
    berlin = Compute("Berlin", {"b-small": "small"})
    denver = Compute("Denver", {"d-small": "small"})
    handle = make_handle({"Berlin": "b-small", "Denver": "d-small"})
    resp = create(core(berlin, denver), "<nova: Berlin&Denver>", flavor=handle)
    assert resp.status == 202, resp.body
    assert flavor_refs(berlin) == ["b-small"] and flavor_refs(denver) == ["d-small"]
