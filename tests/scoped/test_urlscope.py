"""A scope in the URL: the path form, the URL printed for it, and the
catalog of a token obtained through it."""

from __future__ import annotations

import orjson
import pytest

from scoped.carry import decode_scope
from scoped.errors import ScopeError
from scoped.urlscope import rewrite_catalog, scope_url, split_scope_path


def test_the_path_form_splits_into_scope_prefix_and_rest() -> None:
    assert split_scope_path("/scope/abc/identity/v3") == ("abc", "/scope/abc", "/identity/v3")
    assert split_scope_path("/scope/abc") == ("abc", "/scope/abc", "/")
    assert split_scope_path("/identity/v3") == (None, "", "/identity/v3")
    assert split_scope_path("/scoped/x") == (None, "", "/scoped/x")


def test_the_url_carries_the_canonical_scope() -> None:
    url = scope_url("http://gw:18000/", "{nova: Berlin&Denver}")
    assert url.startswith("http://gw:18000/scope/") and url.endswith("/identity/v3")
    segment = split_scope_path(url[len("http://gw:18000") :])[0]
    assert segment is not None and "=" not in segment
    assert decode_scope(segment) == "<compute: Berlin&Denver>"
    with pytest.raises(ScopeError, match="expected"):
        scope_url("http://gw", "<nova: Berlin&>")


def test_the_catalog_points_under_the_scoped_prefix_and_nothing_else_changes() -> None:
    body = orjson.dumps(
        {
            "token": {
                "catalog": [
                    {"type": "compute", "endpoints": [{"url": "http://gw:18000/compute/v2.1"}]},
                    {"type": "image", "endpoints": [{"url": "http://elsewhere:9292"}]},
                ],
                "project": {"name": "http://gw:18000/not-a-link"},
            }
        }
    )
    out = orjson.loads(rewrite_catalog(body, "http://gw:18000", "/scope/abc"))
    endpoints = [s["endpoints"][0]["url"] for s in out["token"]["catalog"]]
    assert endpoints == ["http://gw:18000/scope/abc/compute/v2.1", "http://elsewhere:9292"]
    assert out["token"]["project"]["name"] == "http://gw:18000/not-a-link"
    again = rewrite_catalog(orjson.dumps(out), "http://gw:18000", "/scope/abc")
    assert orjson.loads(again) == out, "a scoped URL is not scoped twice"
    assert rewrite_catalog(b"not json http://gw:18000", "http://gw:18000", "/s") == (
        b"not json http://gw:18000"
    )
