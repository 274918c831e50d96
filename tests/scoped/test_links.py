"""Links, never data: what is rewritten in an answer so that a client
following it comes back to this gateway."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from scoped.links import is_link_key, rewrite_links, rewrite_location

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


class _OldRewriter:
    """The walk before its rewrite for speed (scoped.links.relink), kept as
    the reference the property test holds the new one to."""

    def __init__(self, base: str, entry_url: str, rooted: bool) -> None:
        self.base, self.entry_url, self.rooted = base, entry_url, rooted
        self.base_path = urlsplit(base).path.rstrip("/") if base else ""
        self.entry_path = urlsplit(entry_url).path.rstrip("/")
        self.changed = False

    def walk(self, node: Any, in_link: bool) -> Any:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, (dict, list)) or (in_link or is_link_key(key)):
                    new = self.walk(value, in_link or is_link_key(key))
                    if new is not value:
                        node[key] = new
            return node
        if isinstance(node, list):
            for i, value in enumerate(node):
                new = self.walk(value, in_link)
                if new is not value:
                    node[i] = new
            return node
        if in_link and isinstance(node, str):
            return self.link(node)
        return node

    def link(self, value: str) -> str:
        base = self.base
        if base and base != self.entry_url and value.startswith(base):
            rest = value[len(base) :]
            if not rest or rest[0] in "/?#":
                self.changed = True
                return self.entry_url + rest
        if self.rooted and value.startswith("/") and not value.startswith("//"):
            path = self.base_path
            if path and (value == path or value.startswith(path + "/")):
                value = value[len(path) :]
            elif path:
                return value
            if not value.startswith(self.entry_path + "/"):
                self.changed = True
                return self.entry_path + value
        return value


def _old_rewrite_links(body: bytes, base: str, entry_url: str, service: str) -> bytes:
    rooted = service == "placement" and b'"/' in body
    if not rooted and (not base or base == entry_url or base.encode() not in body):
        return body
    data = orjson.loads(body)
    rewriter = _OldRewriter(base, entry_url, rooted)
    data = rewriter.walk(data, False)
    return orjson.dumps(data) if rewriter.changed else body


SITE = "http://10.0.0.7:8774/compute"
_strings = st.sampled_from(
    [SITE, SITE + "/v2.1/servers/1", SITE + "?a=1", SITE + "#f", SITE + "x/y", SITE + ":9/z",
     f'"href": "{SITE}/q', f'"href":"{SITE}/q', "/resource_providers/1", "/compute/v2.1",
     "//host/x", "http://other/compute/1", "vm", "self", "", "back\\slash\""]
)  # fmt: skip
_keys = st.sampled_from(
    ["links", "href", "self", "next", "rel", "id", "name", "servers_links", "metadata", "x",
     'a"href', "a\\", SITE + "/k"]
)  # fmt: skip
_json = st.recursive(
    st.none() | st.integers(-1000, 1000) | _strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=30,
)
_ENCODERS = {
    "orjson": orjson.dumps,
    "json": lambda data: json.dumps(data).encode(),
    "json, indented": lambda data: json.dumps(data, indent=1).encode(),
    "json, compact": lambda data: json.dumps(data, separators=(",", ":")).encode(),
}


@settings(max_examples=500, deadline=None)
@given(
    data=_json,
    service=st.sampled_from(["compute", "placement"]),
    encoder=st.sampled_from(sorted(_ENCODERS)),
)
def test_links_are_rewritten_exactly_as_the_walk_of_the_decoded_body_did(
    data: Any, service: str, encoder: str
) -> None:
    """Replaced in the bytes or walked, the same links (the old walk is the
    reference: _OldRewriter); bytes may differ, what they decode to not."""
    body = _ENCODERS[encoder](data)
    for base in (SITE, ""):
        expected = orjson.loads(_old_rewrite_links(body, base, "https://gw/compute", service))
        assert orjson.loads(rewrite_links(body, base, "https://gw/compute", service)) == expected


def test_nova_links_are_replaced_in_the_bytes_and_a_stored_value_is_not() -> None:
    items = [
        {"id": "1", "links": [{"rel": "self", "href": f"{SITE}/v2.1/servers/1"}]},
        {"id": "2", "metadata": {"url": f"{SITE}/v2.1"}},  # data: keeps the walk
    ]
    links_only = orjson.dumps({"servers": items[:1]})
    out = rewrite_links(links_only, SITE, "https://gw/compute")
    assert out == links_only.replace(SITE.encode(), b"https://gw/compute")
    both = orjson.loads(rewrite_links(orjson.dumps({"servers": items}), SITE, "https://gw/c"))
    assert both["servers"][0]["links"][0]["href"] == "https://gw/c/v2.1/servers/1"
    assert both["servers"][1]["metadata"]["url"] == f"{SITE}/v2.1"


def test_a_key_that_ends_in_href_is_not_a_link_key() -> None:
    """``"a\\"href":"BASE`` holds ``"href":"BASE`` in its bytes: the key is
    ``a"href``, and its value is data."""
    body = orjson.dumps({'a"href': f"{SITE}/1", "links": {"self": f"{SITE}/2"}})
    data = orjson.loads(rewrite_links(body, SITE, "https://gw/c"))
    assert data == {'a"href': f"{SITE}/1", "links": {"self": "https://gw/c/2"}}
