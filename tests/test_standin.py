"""The stand-in site backends behave like the OpenStack APIs they stand in for."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest

from tests.standin import (
    GLANCE_DEFAULT_LIMIT,
    PATTERN,
    SiteData,
    make_items,
    pattern_sha256,
    serve,
    serve_in_thread,
    serve_sites_in_thread,
)

MAX_PAGES = 100


def site(n: int = 23, name: str = "Berlin") -> SiteData:
    return SiteData(
        name,
        servers=make_items("vm", n, seed=name),
        images=make_items("img", n, seed=name),
        networks=make_items("net", n, seed=name),
        users=make_items("user", 3, seed=name),
    )


@pytest.fixture
def berlin() -> Iterator[tuple[SiteData, httpx.Client]]:
    data = site()
    with serve_in_thread(data) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield data, client


def expected_default_order(items: list[dict[str, Any]]) -> list[str]:
    """created_at desc, then id desc."""
    ordered = sorted(items, key=lambda i: (i["created_at"], i["id"]), reverse=True)
    return [i["id"] for i in ordered]


def walk_nova(client: httpx.Client, first: str) -> tuple[list[str], int]:
    ids: list[str] = []
    url: str | None = first
    pages = 0
    while url is not None and pages < MAX_PAGES:
        response = client.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [s["id"] for s in body["servers"]]
        links = [link["href"] for link in body.get("servers_links", []) if link["rel"] == "next"]
        url = links[0] if links else None
        pages += 1
    assert url is None, "paging did not end"
    return ids, pages


# ----------------------------------------------------------------- make_items


def test_make_items_is_deterministic_and_unique() -> None:
    a, b = make_items("vm", 50, seed="Berlin"), make_items("vm", 50, seed="Berlin")
    assert a == b
    assert len({i["id"] for i in a}) == 50
    assert all(re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", i["id"]) for i in a)
    other = make_items("vm", 50, seed="Denver")
    assert not {i["id"] for i in a} & {i["id"] for i in other}
    assert [i["name"] for i in a[:2]] == ["vm-0000", "vm-0001"]
    assert a[0]["created_at"] == "2024-01-01T00:00:00Z" < a[1]["created_at"]
    same = make_items("x", 3, step_seconds=0, flavor="m1.tiny")
    assert len({i["created_at"] for i in same}) == 1
    assert same[0]["flavor"] == "m1.tiny"


# ----------------------------------------------------------------------- nova


@pytest.mark.parametrize("path", ["/v2.1/servers", "/v2.1/servers/detail", "/compute/v2.1/servers"])
def test_nova_paging_returns_every_item_exactly_once(
    berlin: tuple[SiteData, httpx.Client], path: str
) -> None:
    data, client = berlin
    ids, pages = walk_nova(client, f"{path}?limit=5")
    assert ids == expected_default_order(data.servers)
    assert pages == 5  # 5+5+5+5+3


def test_nova_next_link_is_absolute_and_keeps_the_query(
    berlin: tuple[SiteData, httpx.Client],
) -> None:
    _, client = berlin
    body = client.get("/compute/v2.1/servers/detail?limit=4&sort_key=name&sort_dir=asc").json()
    (link,) = body["servers_links"]
    assert link["rel"] == "next"
    parts = urlsplit(link["href"])
    assert f"{parts.scheme}://{parts.netloc}" == str(client.base_url).rstrip("/")
    assert parts.path == "/compute/v2.1/servers/detail"
    assert "sort_key=name" in parts.query and "limit=4" in parts.query
    assert f"marker={body['servers'][-1]['id']}" in parts.query
    # a page that ends exactly at the end still gets a link (nova: returned == limit),
    # which leads to an empty page without one
    ids, _ = walk_nova(client, "/v2.1/servers?limit=23")
    assert len(ids) == 23
    last = client.get(f"/v2.1/servers?limit=23&marker={ids[-1]}").json()
    assert last == {"servers": []}
    # no limit: everything, no link
    assert "servers_links" not in client.get("/v2.1/servers").json()


def test_nova_sort_orders(berlin: tuple[SiteData, httpx.Client]) -> None:
    data, client = berlin

    def names(url: str) -> list[str]:
        return [s["name"] for s in client.get(url).json()["servers"]]

    ascending = sorted(s["name"] for s in data.servers)
    assert names("/v2.1/servers?sort_key=name&sort_dir=asc") == ascending
    # only a key: nova's default direction (desc) for it
    assert names("/v2.1/servers?sort_key=name") == ascending[::-1]
    # equal created_at: the id tie-break, in the first direction
    data.servers = make_items("tie", 9, step_seconds=0)
    ids = [s["id"] for s in client.get("/v2.1/servers").json()["servers"]]
    assert ids == sorted((s["id"] for s in data.servers), reverse=True)
    ids = [s["id"] for s in client.get("/v2.1/servers?sort_dir=asc").json()["servers"]]
    assert ids == sorted(s["id"] for s in data.servers)
    # repeated sort keys, one direction each
    data.servers = [
        {"id": f"00000000-0000-0000-0000-00000000000{i}", "name": n, "created_at": c}
        for i, (n, c) in enumerate([("b", "1"), ("a", "1"), ("b", "2"), ("a", "2")])
    ]
    url = "/v2.1/servers/detail?sort_key=name&sort_dir=asc&sort_key=created_at&sort_dir=desc"
    got = [(s["name"], s["created_at"]) for s in client.get(url).json()["servers"]]
    assert got == [("a", "2"), ("a", "1"), ("b", "2"), ("b", "1")]
    assert client.get("/v2.1/servers?sort_dir=sideways").status_code == 400


def test_nova_errors_show_create_delete(berlin: tuple[SiteData, httpx.Client]) -> None:
    data, client = berlin
    response = client.get("/v2.1/servers?limit=2&marker=no-such-id")
    assert response.status_code == 400
    assert response.json() == {
        "badRequest": {"code": 400, "message": "marker [no-such-id] not found"}
    }
    missing = client.get("/v2.1/servers/no-such-id")
    assert missing.status_code == 404
    assert missing.json()["itemNotFound"]["code"] == 404
    target = data.servers[3]
    shown = client.get(f"/v2.1/servers/{target['id']}").json()["server"]
    assert shown["id"] == target["id"] and shown["name"] == target["name"]
    created = client.post("/v2.1/servers", json={"server": {"name": "new", "flavorRef": "1"}})
    assert created.status_code == 202
    new_id = created.json()["server"]["id"]
    assert created.headers["Location"].endswith(f"/v2.1/servers/{new_id}")
    assert client.get(f"/v2.1/servers/{new_id}").json()["server"]["name"] == "new"
    assert len(data.servers) == 24
    # the newest server comes first in the default order
    assert client.get("/v2.1/servers?limit=1").json()["servers"][0]["id"] == new_id
    assert client.post("/v2.1/servers", json={"server": {}}).status_code == 400
    assert client.delete(f"/v2.1/servers/{new_id}").status_code == 204
    assert client.delete(f"/v2.1/servers/{new_id}").status_code == 404
    assert client.get(f"/v2.1/servers/{new_id}").status_code == 404


# --------------------------------------------------------------------- glance


def walk_glance(client: httpx.Client, endpoint: str, first: str) -> tuple[list[str], int]:
    ids: list[str] = []
    url: str | None = first
    pages = 0
    while url is not None and pages < MAX_PAGES:
        response = client.get(endpoint + url)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["schema"] == "/v2/schemas/images"
        ids += [i["id"] for i in body["images"]]
        url = body.get("next")
        pages += 1
    assert url is None, "paging did not end"
    return ids, pages


@pytest.mark.parametrize("endpoint", ["", "/image"])
def test_glance_paging_returns_every_item_exactly_once(
    endpoint: str,
) -> None:
    data = site(n=60)
    with serve_in_thread(data) as url, httpx.Client(base_url=url, timeout=10) as client:
        first = client.get(endpoint + "/v2/images").json()
        assert len(first["images"]) == GLANCE_DEFAULT_LIMIT
        assert first["first"] == "/v2/images"
        assert first["next"].startswith("/v2/images?")  # relative, like glance
        ids, pages = walk_glance(client, endpoint, "/v2/images")
        assert ids == expected_default_order(data.images)
        assert pages == 3  # 25 + 25 + 10
        ids, pages = walk_glance(client, endpoint, "/v2/images?limit=7&sort=name:asc")
        assert ids == [i["id"] for i in sorted(data.images, key=lambda i: i["name"])]
        assert pages == 9  # 8 * 7 + 4


def test_glance_next_keeps_other_params_and_sorts(berlin: tuple[SiteData, httpx.Client]) -> None:
    data, client = berlin
    body = client.get("/v2/images?limit=3&member_status=all&sort_key=name&sort_dir=asc").json()
    assert body["first"] == "/v2/images?limit=3&member_status=all&sort_key=name&sort_dir=asc"
    query = urlsplit(body["next"]).query
    assert "member_status=all" in query and "limit=3" in query and "sort_key=name" in query
    assert query.endswith(f"marker={body['images'][-1]['id']}")
    names = [i["name"] for i in body["images"]]
    assert names == sorted(i["name"] for i in data.images)[:3]
    names = [i["name"] for i in client.get("/v2/images?sort=name:desc&limit=3").json()["images"]]
    assert names == sorted((i["name"] for i in data.images), reverse=True)[:3]
    assert client.get("/v2/images?sort=name&sort_key=name").status_code == 400
    bad = client.get("/v2/images?marker=nope")
    assert bad.status_code == 400
    missing = client.get("/v2/images/nope")
    assert missing.status_code == 404
    assert missing.json()["title"] == "Not Found"
    image = client.get(f"/v2/images/{data.images[0]['id']}").json()
    assert image["id"] == data.images[0]["id"]
    assert image["self"] == f"/v2/images/{image['id']}"
    assert image["file"] == f"/v2/images/{image['id']}/file"


def test_glance_streaming_upload_records_size_and_hash(
    berlin: tuple[SiteData, httpx.Client],
) -> None:
    data, client = berlin
    image_id = data.images[0]["id"]
    size = 5 * 1024 * 1024 + 123
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:  # chunked transfer: no Content-Length
        sent = 0
        while sent < size:
            chunk = bytes([sent % 251]) * min(100_000, size - sent)
            digest.update(chunk)
            sent += len(chunk)
            yield chunk

    response = client.put(
        f"/image/v2/images/{image_id}/file",
        content=body(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 204, response.text
    (upload,) = data.uploads
    assert (upload.image_id, upload.size, upload.sha256) == (image_id, size, digest.hexdigest())
    image = client.get(f"/v2/images/{image_id}").json()
    assert image["size"] == size and image["os_hash_value"] == digest.hexdigest()
    assert image["status"] == "active"
    (received,) = data.requests("PUT")
    assert received.body_length == size and received.body_sha256 == digest.hexdigest()
    assert received.body is None  # too large to keep
    assert received.headers["transfer-encoding"] == "chunked"
    assert client.put("/v2/images/nope/file", content=b"x").status_code == 404


def test_glance_download_streams_the_asked_size(berlin: tuple[SiteData, httpx.Client]) -> None:
    data, client = berlin
    image_id = data.images[1]["id"]
    size = 3 * len(PATTERN) + 17
    digest = hashlib.sha256()
    got = 0
    with client.stream("GET", f"/v2/images/{image_id}/file?size={size}") as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(size)
        assert response.headers["Content-Type"] == "application/octet-stream"
        for chunk in response.iter_bytes():
            digest.update(chunk)
            got += len(chunk)
    assert got == size and digest.hexdigest() == pattern_sha256(size)
    # no size: the image's own size; no data at all: 204, like glance
    data.images[1]["size"] = 1000
    assert len(client.get(f"/v2/images/{image_id}/file").content) == 1000
    assert client.get(f"/v2/images/{data.images[2]['id']}/file").status_code == 204
    assert client.get("/v2/images/nope/file?size=10").status_code == 404


# -------------------------------------------------------------------- neutron


def test_neutron_paging_links(berlin: tuple[SiteData, httpx.Client]) -> None:
    data, client = berlin
    ids: list[str] = []
    url: str | None = "/networking/v2.0/networks?limit=5"
    pages = 0
    second: dict[str, Any] = {}
    while url is not None and pages < MAX_PAGES:
        body = client.get(url).json()
        ids += [n["id"] for n in body["networks"]]
        if pages == 1:
            second = body
        for link in body.get("networks_links", []):  # absolute, under the same mount
            assert urlsplit(link["href"]).path == "/networking/v2.0/networks"
        nexts = [lk["href"] for lk in body.get("networks_links", []) if lk["rel"] == "next"]
        url = nexts[0] if nexts else None
        pages += 1
    assert ids == sorted(n["id"] for n in data.networks)  # neutron: id asc by default
    assert pages == 5
    # a page reached with a marker has a "previous" link that leads back
    (prev,) = [lk["href"] for lk in second["networks_links"] if lk["rel"] == "previous"]
    assert "page_reverse=True" in prev
    back = client.get(prev).json()
    assert [n["id"] for n in back["networks"]] == ids[:5]
    # sorting, pairing rules, show and errors
    body = client.get("/v2.0/networks?sort_key=name&sort_dir=desc").json()
    assert [n["name"] for n in body["networks"]] == sorted(
        (n["name"] for n in data.networks), reverse=True
    )
    assert "networks_links" not in body
    assert client.get("/v2.0/networks?sort_key=name").status_code == 400
    missing = client.get("/v2.0/networks/nope")
    assert missing.status_code == 404
    assert missing.json()["NeutronError"]["type"] == "NetworkNotFound"
    assert client.get("/v2.0/networks?limit=2&marker=nope").status_code == 404
    shown = client.get(f"/v2.0/networks/{data.networks[0]['id']}").json()["network"]
    assert shown["name"] == data.networks[0]["name"] and shown["status"] == "ACTIVE"


# ------------------------------------------------------------------- keystone


def test_keystone_users_and_tokens(berlin: tuple[SiteData, httpx.Client]) -> None:
    data, client = berlin
    response = client.get("/identity/v3/users")
    body = response.json()
    assert [u["id"] for u in body["users"]] == [u["id"] for u in data.users]
    assert body["links"] == {
        "self": f"{str(client.base_url).rstrip('/')}/identity/v3/users",
        "previous": None,
        "next": None,
    }
    assert body["users"][0]["links"]["self"].endswith(f"/identity/v3/users/{data.users[0]['id']}")
    headers = {"X-Auth-Token": "service-token", "X-Subject-Token": "user-token"}
    validated = client.get("/v3/auth/tokens", headers=headers)
    assert validated.status_code == 200
    seen = {"x-auth-token": "service-token", "x-subject-token": "user-token"}
    assert validated.json()["seen"] == seen
    assert validated.json()["token"]["seen"] == seen
    assert validated.headers["X-Subject-Token"] == "user-token"
    head = client.head("/identity/v3/auth/tokens", headers=headers)
    assert head.status_code == 200 and head.content == b""
    assert [r.method for r in data.requests(path="/identity/v3/auth/tokens")] == ["HEAD"]
    issued = client.post("/v3/auth/tokens", json={"auth": {}})
    assert issued.status_code == 201 and issued.headers["X-Subject-Token"].startswith("tok-Berlin-")
    catalog = {s["type"]: s["endpoints"][0] for s in issued.json()["token"]["catalog"]}
    assert catalog["compute"]["url"].endswith("/compute/v2.1")
    assert catalog["image"]["region"] == "Berlin"


# ------------------------------------------------------------ echo and headers


def test_echo_request_ids_and_received_log(berlin: tuple[SiteData, httpx.Client]) -> None:
    data, client = berlin
    payload = b'{"x": 1}'
    response = client.post(
        "/compute/echo/a/b?x=1&x=2",
        content=payload,
        headers={"X-Auth-Token": "tok!scope!abc", "X-OpenStack-Request-ID": "req-given"},
    )
    assert response.status_code == 200
    assert response.headers["X-OpenStack-Request-ID"] == "req-given"
    assert response.headers["X-Site"] == "Berlin"
    echoed = response.json()
    assert echoed["method"] == "POST" and echoed["path"] == "/compute/echo/a/b"
    assert echoed["query"] == "x=1&x=2"
    assert echoed["headers"]["x-auth-token"] == "tok!scope!abc"
    assert echoed["body_length"] == len(payload)
    assert echoed["body_sha256"] == hashlib.sha256(payload).hexdigest()
    (received,) = data.received
    assert received.method == "POST" and received.path == "/compute/echo/a/b"
    assert received.query == {"x": ["1", "2"]} and received.body == payload
    assert received.headers["x-openstack-request-id"] == "req-given"
    fresh = client.delete("/echo/")
    assert re.fullmatch(r"req-[0-9a-f-]{36}", fresh.headers["X-OpenStack-Request-ID"])
    assert fresh.json()["method"] == "DELETE"
    unknown = client.get("/no/such/route")  # even the router's 404 carries the headers
    assert unknown.status_code == 404 and unknown.headers["X-Site"] == "Berlin"
    assert [r.path for r in data.received] == ["/compute/echo/a/b", "/echo/", "/no/such/route"]


# ----------------------------------------------------------------- fault knobs


def test_fail_status_uses_each_service_error_shape(berlin: tuple[SiteData, httpx.Client]) -> None:
    data, client = berlin
    data.fail_status = 503
    nova = client.get("/v2.1/servers")
    assert nova.status_code == 503
    assert nova.json()["serviceUnavailable"]["code"] == 503
    assert nova.headers["X-Site"] == "Berlin" and "X-OpenStack-Request-ID" in nova.headers
    assert client.get("/image/v2/images").json()["code"] == "503 Service Unavailable"
    assert "NeutronError" in client.get("/v2.0/networks").json()
    assert client.get("/v3/users").json()["error"]["code"] == 503
    data.fail_status = 500
    assert "computeFault" in client.post("/v2.1/servers", json={"server": {"name": "x"}}).json()
    assert len(data.servers) == 23  # nothing was created
    assert len(data.received) == 5  # all of them were received
    data.fail_status = None
    assert client.get("/v2.1/servers").status_code == 200


def test_delay(berlin: tuple[SiteData, httpx.Client]) -> None:
    data, client = berlin
    data.delay = 0.3
    start = time.monotonic()
    assert client.get("/v2.1/servers?limit=1").status_code == 200
    assert time.monotonic() - start >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        client.get("/v2.1/servers", timeout=0.1)
    data.delay = 0.0


def test_hang_until_the_client_gives_up() -> None:
    data = site()
    start = time.monotonic()
    with serve_in_thread(data) as url, httpx.Client(base_url=url) as client:
        data.hang = True
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v2.1/servers", json={"server": {"name": "x"}}, timeout=0.3)
        (received,) = data.received  # received, body read, never answered
        assert received.method == "POST" and received.body_length > 0
        assert len(data.servers) == 23
        data.hang = False
        assert client.get("/v2.1/servers?limit=1").status_code == 200
        data.hang = True  # left hanging at shutdown: the server still stops at once
        with pytest.raises(httpx.ReadTimeout):
            client.get("/v2.1/servers", timeout=0.2)
    assert time.monotonic() - start < 5


def test_hang_released_answers_normally_async() -> None:
    async def scenario() -> None:
        data = site()
        data.hang = True
        async with serve(data) as url, aiohttp.ClientSession() as session:
            task = asyncio.create_task(session.get(f"{url}/v2.1/servers?limit=2"))
            for _ in range(200):  # bounded: wait until the site has it
                if data.received:
                    break
                await asyncio.sleep(0.01)
            assert data.received and not task.done()
            data.hang = False
            async with await asyncio.wait_for(task, 5) as response:
                assert response.status == 200
                assert len((await response.json())["servers"]) == 2

    asyncio.run(scenario())


def test_serve_async_and_several_sites_in_thread() -> None:
    async def scenario() -> None:
        data = site(name="Paris")
        async with serve(data) as url, aiohttp.ClientSession() as session:
            assert url.startswith("http://127.0.0.1:")
            async with session.get(f"{url}/") as response:
                assert (await response.json())["site"] == "Paris"

    asyncio.run(scenario())
    berlin, denver = site(name="Berlin"), site(name="Denver")
    with serve_sites_in_thread([berlin, denver]) as urls:
        assert set(urls) == {"Berlin", "Denver"} and urls["Berlin"] != urls["Denver"]
        for name, url in urls.items():
            response = httpx.get(f"{url}/v2.1/servers/{site(name=name).servers[0]['id']}")
            assert response.headers["X-Site"] == name and response.status_code == 200
        cross = httpx.get(f"{urls['Denver']}/v2.1/servers/{berlin.servers[0]['id']}")
        assert cross.status_code == 404
