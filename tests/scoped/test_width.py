"""A thousand sites through the core's in-memory seam: what a client gets
back stays small at any width (docs/design.md §7: bounded answers)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from scoped.config import parse_config
from scoped.gateway import Gateway
from scoped.http import Body, Request, Response
from scoped.memory import Exchange, MemoryReply, MemoryUpstream, json_reply
from scoped.respond import LISTED

N = 1000
SITES = [f"S{i}" for i in range(N)]


def origin(site: str) -> str:
    return f"http://{site.lower()}.test"


async def empty(ex: Exchange) -> MemoryReply:
    return json_reply(200, {"servers": [{"id": ex.origin, "name": "vm"}]})


def gateway(refused: set[str]) -> Gateway:
    data: dict[str, Any] = {
        "site": SITES[0],
        "backends": {"compute": f"{origin(SITES[0])}/compute"},
        "sites": {s: {"endpoints": {"compute": f"{origin(s)}/compute"}} for s in SITES[1:]},
        "limits": {"max_fanout": 2000},
        "retries": {"attempts": 1},
        "timeouts": {"connect": 0.5, "total": 1.0},
    }
    data["sites"][SITES[0]] = {}
    upstream = MemoryUpstream({origin(s): empty for s in SITES if s not in refused})
    return Gateway(parse_config(data, "<test>"), upstream)


def get(gw: Gateway, scope: str) -> Response:
    headers = (("x-auth-token", "t"), ("x-scope", scope))
    req = Request("GET", "compute", "/v2.1/servers", "", headers, "http://gw/compute", Body())
    return asyncio.run(gw.handle(req))


def create_server(gw: Gateway, scope: str) -> Response:
    headers = (("x-auth-token", "t"), ("x-scope", scope))
    body = Body(b'{"server": {"name": "vm"}}')
    req = Request("POST", "compute", "/v2.1/servers", "", headers, "http://gw/compute", body)
    return asyncio.run(gw.handle(req))


def sites_header(resp: Response) -> str:
    return dict(resp.headers)["x-scope-sites"]


def test_every_site_answering_gives_a_short_sites_header() -> None:
    resp = get(gateway(set()), "<nova: *>")
    assert resp.status == 200
    assert isinstance(resp.body, bytes)
    assert len(orjson.loads(resp.body)["servers"]) == N
    header = sites_header(resp)
    assert header.startswith(f"*=200;n={N};t=")
    assert len(header) < 100


def test_a_wide_failure_names_the_failed_sites_and_counts_the_rest() -> None:
    refused = {f"S{i}" for i in range(1, N, 20)}  # 5% of the sites
    resp = get(gateway(refused), "<nova: *>")
    assert resp.status == 502
    assert isinstance(resp.body, bytes)
    error = orjson.loads(resp.body)["error"]
    named = {s["site"] for s in error["sites"]}
    assert named == refused  # 50 of them: every one named, no site that answered
    assert error["counts"] == {"200": N - len(refused), "refused": len(refused)}
    assert "S0: " not in error["message"] and "S1: refused" in error["message"]
    assert f"({N - len(refused)} of {N} sites succeeded)" in error["message"]
    assert len(resp.body) < 16_000
    header = sites_header(resp)
    assert header.count("=refused;") == len(refused)
    assert f"*=200;n={N - len(refused)}" in header


def test_past_the_listed_bound_the_failed_sites_are_counted_too() -> None:
    refused = {f"S{i}" for i in range(1, N, 5)}  # 200 sites: more than LISTED
    resp = get(gateway(refused), "<nova: *>")
    assert isinstance(resp.body, bytes)
    error = orjson.loads(resp.body)["error"]
    assert len(error["sites"]) == LISTED
    assert f"and {len(refused) - LISTED} more" in error["message"]
    header = sites_header(resp)
    assert header.count("=refused;t=") == LISTED
    assert f"*=refused;n={len(refused) - LISTED}" in header


def test_a_few_sites_are_each_listed_as_before() -> None:
    resp = get(gateway(set()), "<nova: S1&S2&S3>")
    assert [e.split(";")[0] for e in sites_header(resp).split(", ")] == [
        "S1=200",
        "S2=200",
        "S3=200",
    ]


def test_every_site_best_effort_is_two_characters() -> None:
    refused = {f"S{i}" for i in range(1, N, 20)}
    resp = get(gateway(refused), "<nova: *?>")
    assert resp.status == 200
    assert isinstance(resp.body, bytes)
    assert len(orjson.loads(resp.body)["servers"]) == N - len(refused)
    assert sites_header(resp).count("=refused;") == len(refused)


def test_best_effort_with_no_site_answering_is_an_error_not_an_empty_list() -> None:
    everyone = set(SITES)
    resp = get(gateway(everyone), "<nova: *?>")
    assert resp.status == 502
    assert isinstance(resp.body, bytes)
    assert orjson.loads(resp.body)["error"]["message"].startswith(
        "every site of a fan-out (&) failed"
    )


def test_a_create_too_wide_for_a_handle_is_refused_before_anything_is_sent() -> None:
    gw = gateway(set())
    upstream = gw.upstream
    assert isinstance(upstream, MemoryUpstream)
    resp = create_server(gw, "<nova: *>")
    assert resp.status == 400
    assert isinstance(resp.body, bytes)
    assert "at most 64 sites per create" in orjson.loads(resp.body)["error"]["message"]
    assert upstream.calls == []


def test_a_create_whose_ids_make_too_long_a_handle_is_undone() -> None:
    created: dict[str, str] = {}
    deleted: list[str] = []

    async def nova(ex: Exchange) -> MemoryReply:
        if ex.method == "DELETE":
            deleted.append(ex.path.rsplit("/", 1)[-1])
            return MemoryReply(204)
        server_id = ex.origin.removeprefix("http://") + "-" + "x" * 120  # a long ID
        created[ex.origin] = server_id
        return json_reply(202, {"server": {"id": server_id}})

    sites = SITES[:60]
    gw = gateway(set(SITES) - set(sites))
    assert isinstance(gw.upstream, MemoryUpstream)
    gw.upstream.handlers.update({origin(s): nova for s in sites})
    resp = create_server(gw, "<nova: " + "&".join(sites) + ">")
    assert resp.status == 502
    assert isinstance(resp.body, bytes)
    assert "could not be answered" in orjson.loads(resp.body)["error"]["message"]
    assert sorted(deleted) == sorted(created.values()), "every replica made is undone"
