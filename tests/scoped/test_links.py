"""Links, never data: what is rewritten in an answer so that a client
following it comes back to this gateway."""

from __future__ import annotations

import orjson

from scoped.links import rewrite_links, rewrite_location

BASE = "http://127.0.0.1:15000"
ENTRY = "http://gw:18000/identity"


def test_links_are_rewritten_and_stored_values_are_not() -> None:
    body = orjson.dumps(
        {
            "endpoints": [
                {
                    "url": "http://127.0.0.1:15000/v3",
                    "links": {"self": "http://127.0.0.1:15000/v3/endpoints/e1"},
                }
            ],
            "links": {"self": "http://127.0.0.1:15000/v3/endpoints", "next": None},
        }
    )
    out = orjson.loads(rewrite_links(body, BASE, ENTRY))
    assert out["endpoints"][0]["url"] == "http://127.0.0.1:15000/v3", "data stays as stored"
    assert out["endpoints"][0]["links"]["self"] == f"{ENTRY}/v3/endpoints/e1"
    assert out["links"] == {"self": f"{ENTRY}/v3/endpoints", "next": None}


def test_version_documents_and_nova_links() -> None:
    base = "http://127.0.0.1:18774"
    body = orjson.dumps(
        {
            "versions": [{"id": "v2.1", "links": [{"rel": "self", "href": f"{base}/v2.1/"}]}],
            "servers_links": [{"rel": "next", "href": f"{base}/v2.1/servers?marker=x"}],
            "metadata": {"mirror": f"{base}/v2.1/"},
        }
    )
    out = orjson.loads(rewrite_links(body, base, "http://gw/compute"))
    assert out["versions"][0]["links"][0]["href"] == "http://gw/compute/v2.1/"
    assert out["servers_links"][0]["href"] == "http://gw/compute/v2.1/servers?marker=x"
    assert out["metadata"]["mirror"] == f"{base}/v2.1/"


def test_a_longer_port_is_not_the_base() -> None:
    body = orjson.dumps({"links": [{"href": "http://127.0.0.1:150001/v3"}]})
    assert rewrite_links(body, BASE, ENTRY) == body


def test_placement_paths_from_its_root_get_the_entry_path() -> None:
    body = orjson.dumps(
        {
            "resource_providers": [
                {
                    "name": "/not/a/link",
                    "links": [{"rel": "self", "href": "/resource_providers/abc"}],
                }
            ]
        }
    )
    out = orjson.loads(
        rewrite_links(body, "http://127.0.0.1:18778", "http://gw/placement", "placement")
    )
    provider = out["resource_providers"][0]
    assert provider["links"][0]["href"] == "/placement/resource_providers/abc"
    assert provider["name"] == "/not/a/link"
    # From another site's gateway: its prefix becomes ours.
    remote = orjson.dumps({"links": [{"href": "/placement/resource_providers/abc"}]})
    out = orjson.loads(
        rewrite_links(remote, "http://denver/placement", "http://gw/scope/X/placement", "placement")
    )
    assert out["links"][0]["href"] == "/scope/X/placement/resource_providers/abc"


def test_no_link_to_the_site_leaves_the_bytes_as_they_came() -> None:
    body = b'{"servers": [], "note": "spaces  kept"}'
    assert rewrite_links(body, BASE, ENTRY) is body


def test_location_is_rewritten_like_a_link() -> None:
    headers = [("location", f"{BASE}/v3/x"), ("content-type", "application/json")]
    assert rewrite_location(headers, BASE, ENTRY)[0] == ("location", f"{ENTRY}/v3/x")
    other = [("location", "http://127.0.0.1:150009/v3")]
    assert rewrite_location(other, BASE, ENTRY) == other
