"""Hostile input for the decoders of what a client sends (issue 17, part 2):
the scope on a token (``scoped.carry``), the composite paging marker
(``scoped.paging``, read by ``listing_of``), replica handles
(``scoped.handles``) and the scope in a URL (``scoped.urlscope``).

Fuzzed with hypothesis, not atheris: atheris is not used in this project;
hypothesis shrinks a failure to a small input, which is what a regression
test needs.

What each may raise, from its docstring and its callers:

- ``decode_scope`` / ``scope_of_token``: :class:`ScopeError` only (the gateway
  turns it into a 400); ``scope_of_token`` gives None for a token without the
  suffix. Chained with ``parse`` as the gateway does, still only ScopeError.
- ``listing_of`` (and ``decode_marker`` under it): :class:`GatewayError` with
  status 400 only (the gateway catches nothing else around it).
- ``read_handle``: nothing; None for what is not a handle. ``path_at`` and
  ``path_handle`` (every path of a write goes through them): nothing.
- ``split_scope_path``: nothing; ``rewrite_catalog`` (any Keystone answer
  body): nothing, and the body unchanged unless it held a catalog to rewrite.

Anything else escaping (IndexError, UnicodeDecodeError, KeyError, TypeError,
RecursionError, an orjson error) is a finding.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scoped_grammar import ScopeError, parse

from scoped.carry import SUFFIX, attach, decode_scope, encode_scope, scope_of_token, strip
from scoped.errors import GatewayError
from scoped.handles import PREFIX as HANDLE_PREFIX
from scoped.handles import HandleTooLong, make_handle, path_at, path_handle, read_handle
from scoped.paging import MARKER_PREFIX, Listing, decode_marker, encode_marker, listing_of
from scoped.urlscope import PREFIX as URL_PREFIX
from scoped.urlscope import rewrite_catalog, split_scope_path
from scoped.writes import MAX_REPLICAS

FUZZ = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# Text that looks like base64url, text that is base64url of anything, and
# text that is base64url with a stray character (padding, '+', '/', a
# newline, non-ASCII) somewhere in it.
b64_alphabet_text = st.text(alphabet=B64URL, max_size=64)
b64_of_bytes = st.binary(max_size=64).map(b64url)
b64_of_text = st.text(max_size=40).map(lambda t: b64url(t.encode("utf-8", "surrogatepass")))
STRAYS = ["=", "==", "+", "/", "\n", " ", "\x00", "é", "\u0660", "%3D", ".", "!scope!"]


@st.composite
def spoiled_b64(draw: st.DrawFn) -> str:
    text = draw(st.one_of(b64_of_bytes, b64_of_text))
    i = draw(st.integers(0, len(text)))
    return text[:i] + draw(st.sampled_from(STRAYS)) + text[i:]


almost_b64 = st.one_of(b64_alphabet_text, b64_of_bytes, b64_of_text, spoiled_b64(), st.text())

# JSON values of every kind, for markers and handles.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


def json_b64(value: Any) -> str:
    return b64url(json.dumps(value).encode("utf-8", "surrogatepass"))


def _no_surrogates(text: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- the scope on a token ----------------------------------------------------


def _decoded(data: str) -> str | None:
    """decode_scope's result, or None if it refused (with ScopeError only)."""
    try:
        text = decode_scope(data)
    except ScopeError:
        event("decode_scope: ScopeError")
        return None
    event("decode_scope: text")
    assert isinstance(text, str)
    return text


@FUZZ
@given(almost_b64)
def test_decode_scope_gives_text_or_a_scope_error(data: str) -> None:
    text = _decoded(data)  # raises on anything but ScopeError
    assert text is None or decode_scope(data) == text


@FUZZ
@given(st.text(max_size=30), st.one_of(almost_b64, st.text(max_size=30)))
def test_a_token_gives_none_a_scope_or_a_scope_error(token: str, tail: str) -> None:
    """The gateway's path: the suffix decoded, then parsed; ScopeError only."""
    for whole in (token, token + SUFFIX + tail, tail + SUFFIX + token + SUFFIX + tail):
        try:
            text = scope_of_token(whole)
            if text is not None:
                parse(text)
        except ScopeError:
            event("token: ScopeError")
        assert SUFFIX not in strip(whole)


@FUZZ
@given(st.text(min_size=1, max_size=40).filter(_no_surrogates))
def test_scope_text_survives_the_token(text: str) -> None:
    assert decode_scope(encode_scope(text)) == text
    assert scope_of_token(attach("tok" + SUFFIX + "old", text)) == text


# -- the composite paging marker ---------------------------------------------


def _listing(service: str, query: str) -> Listing | None:
    """listing_of's result, or None if it refused (with GatewayError 400 only)."""
    try:
        listing = listing_of(service, query)
    except GatewayError as err:
        assert err.status == 400
        event("listing_of: GatewayError 400")
        return None
    event("listing_of: listing" + (" (composite)" if listing.composite else ""))
    return listing


markers = st.one_of(
    almost_b64.map(lambda d: MARKER_PREFIX + d),
    json_values.map(lambda v: MARKER_PREFIX + json_b64(v)),
    st.dictionaries(
        st.text(max_size=6), st.one_of(st.none(), st.just(True), st.text(max_size=8)), max_size=4
    ).map(lambda d: MARKER_PREFIX + json_b64(d)),
    st.sampled_from([deep_json(2000), b'{"a": ' * 600 + b"1" + b"}" * 600, b"\xff\xfe", b""]).map(
        lambda raw: MARKER_PREFIX + b64url(raw)
    ),
)
params = st.one_of(
    st.tuples(st.just("marker"), markers),
    st.tuples(
        st.sampled_from(["limit", "sort_key", "sort_dir", "sort", "marker", "x"]),
        st.one_of(
            st.text(max_size=12),
            st.sampled_from(["-1", "0", "9" * 5000, "١٢", "name:asc,", ",:,", "::", " "]),
        ),
    ),
)


@FUZZ
@given(
    st.sampled_from(["compute", "image", "network", "block-storage"]),
    st.lists(params, max_size=5),
)
def test_a_query_gives_a_listing_or_a_400(service: str, pairs: list[tuple[str, str]]) -> None:
    encoded = urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in pairs])
    listing = _listing(service, encoded)  # raises on anything but a 400
    assert listing is None or listing.limit is None or listing.limit >= 0


@FUZZ
@given(st.sampled_from(["compute", "image"]), st.text(max_size=80))
def test_an_arbitrary_query_string_gives_a_listing_or_a_400(service: str, query: str) -> None:
    for q in (query, "marker=" + MARKER_PREFIX + query):
        listing = _listing(service, q)  # raises on anything but a 400
        assert listing is None or listing.limit is None or listing.limit >= 0


@FUZZ
@given(
    st.dictionaries(
        st.text(max_size=8).filter(_no_surrogates),
        st.one_of(st.none(), st.just(True), st.text(max_size=8).filter(_no_surrogates)),
        max_size=5,
    )
)
def test_a_marker_made_here_reads_back(positions: dict[str, str | bool | None]) -> None:
    marker = encode_marker(positions)
    assert decode_marker(marker) == positions
    listing = listing_of("compute", urlencode([("limit", "5"), ("marker", marker)]))
    assert listing.composite and listing.positions == positions


# -- replica handles ---------------------------------------------------------

site_ids = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)
handles = st.one_of(
    almost_b64.map(lambda d: HANDLE_PREFIX + d),
    site_ids.map(lambda d: HANDLE_PREFIX + json_b64(d)),
    site_ids.map(lambda d: HANDLE_PREFIX + json_b64(d)[:-1]),
    json_values.map(lambda v: HANDLE_PREFIX + json_b64(v)),
    st.sampled_from([deep_json(2000), b"\xff", b"{}", b'{"a": 1}', b'{"a": "1", "a": "2"}']).map(
        lambda raw: HANDLE_PREFIX + b64url(raw)
    ),
    st.text(max_size=30),
)


@FUZZ
@given(handles)
def test_read_handle_gives_ids_or_none(text: str) -> None:
    ids = read_handle(text)
    event("read_handle: " + ("None" if ids is None else "ids"))
    if ids is not None:
        assert ids and all(isinstance(k, str) and isinstance(v, str) for k, v in ids.items())


@FUZZ
@given(st.lists(st.one_of(handles, st.text(max_size=8)), max_size=5), st.text(max_size=6))
def test_paths_with_handles_never_raise(parts: list[str], site: str) -> None:
    path = "/" + "/".join(parts)
    result = path_at(path, site)
    assert result is None or isinstance(result, str)
    assert isinstance(path_handle(path), dict)


@FUZZ
@given(
    st.dictionaries(
        st.text(max_size=8).filter(_no_surrogates),
        st.text(min_size=1, max_size=12).filter(_no_surrogates),
        min_size=1,
        max_size=4,
    )
)
def test_a_handle_made_here_reads_back(ids: dict[str, str]) -> None:
    assert read_handle(make_handle(ids)) == ids


def test_a_handle_too_long_to_read_back_is_refused_when_made() -> None:
    """Found by fuzzing: make_handle wrote handles read_handle would not read
    (64 sites with 100-character IDs); the create is then undone."""
    ids = {f"site-{i:02d}": f"flavor-{i:02d}-" + "x" * 90 for i in range(MAX_REPLICAS)}
    with pytest.raises(HandleTooLong):
        make_handle(ids)
    fewer = dict(list(ids.items())[:40])
    assert read_handle(make_handle(fewer)) == fewer


# -- the scope in a URL ------------------------------------------------------


@FUZZ
@given(
    st.one_of(
        st.text(max_size=40),
        st.text(max_size=40).map(lambda t: URL_PREFIX + t),
        almost_b64.map(lambda d: URL_PREFIX + d + "/identity/v3"),
        st.text(max_size=40).map(lambda t: URL_PREFIX + quote(t) + "/compute/v2.1"),
    )
)
def test_a_scoped_path_splits_then_decodes_or_is_a_scope_error(path: str) -> None:
    """The front end splits, the gateway decodes and parses: ScopeError only."""
    scope, prefix, rest = split_scope_path(path)
    if scope is None:
        assert (prefix, rest) == ("", path)
        return
    assert path in (prefix + rest, prefix)
    try:
        parse(decode_scope(scope))
        event("url scope: parsed")
    except ScopeError:
        event("url scope: ScopeError")


ORIGIN = "http://gw:8080"
URL_SCOPE = "/scope/PGNvbXB1dGU6IEJlcmxpbj4"

urls = st.one_of(
    st.text(max_size=20).map(lambda t: ORIGIN + "/" + t),
    st.text(max_size=20).map(lambda t: ORIGIN + URL_SCOPE + "/" + t),
    st.text(max_size=20),
    json_scalars,
)
endpoint = st.one_of(st.fixed_dictionaries({"url": urls}), json_values)
service = st.one_of(
    st.fixed_dictionaries({"endpoints": st.one_of(st.lists(endpoint, max_size=3), json_values)}),
    json_values,
)
catalog = st.one_of(st.lists(service, max_size=3), json_values)
bodies = st.one_of(
    st.fixed_dictionaries({"token": st.fixed_dictionaries({"catalog": catalog})}),
    st.fixed_dictionaries({"token": json_values}),
    st.fixed_dictionaries({"catalog": catalog}),
    json_values,
)


def _rewrite(body: bytes) -> bytes:
    out = rewrite_catalog(body, ORIGIN, URL_SCOPE)
    assert isinstance(out, bytes)
    event("rewrite_catalog: " + ("same" if out is body else "rewritten"))
    return out


@FUZZ
@given(bodies)
def test_rewrite_catalog_takes_any_json(data: Any) -> None:
    raw = json.dumps(data).encode("utf-8", "surrogatepass")
    out = _rewrite(raw)
    if out is not raw:
        assert orjson.loads(out) != orjson.loads(raw)


@FUZZ
@given(st.binary(max_size=80), st.sampled_from([b"", ORIGIN.encode()]))
def test_rewrite_catalog_takes_any_bytes(raw: bytes, origin: bytes) -> None:
    for body in (raw + origin, origin + deep_json(2000) + raw):
        # Not JSON, or too deep: passed on as it came.
        assert _rewrite(body) is body
