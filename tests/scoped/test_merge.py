"""Merging the sites' list answers (scoped/merge.py): what a collection is,
the order of a merge (site order, or by sort keys with None lowest and a
direction per key), ``limit`` and the composite marker's positions."""

from __future__ import annotations

import base64
import heapq
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoped.merge import SITE_KEY, Collection, combine, decode_collection, render
from scoped.paging import DONE, Listing, State, decode_marker, listing_of

# -- a reference: the order the k-way merge has always given ----------------


class _RefKey:
    """Multi-key order with a direction per key; None sorts lowest (no __eq__:
    heapq.merge breaks no tie by site order, as before)."""

    __slots__ = ("dirs", "values")

    def __init__(self, values: tuple[Any, ...], dirs: tuple[bool, ...]) -> None:
        self.values = values
        self.dirs = dirs

    def __lt__(self, other: _RefKey) -> bool:
        for a, b, desc in zip(self.values, other.values, self.dirs, strict=False):
            if a == b:
                continue
            less = _ref_less(a, b)
            return not less if desc else less
        return False


def _ref_rank(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, (int, float)):
        return 1
    return 2 if isinstance(v, str) else 3


def _ref_less(a: Any, b: Any) -> bool:
    ra, rb = _ref_rank(a), _ref_rank(b)
    if ra != rb:
        return ra < rb
    try:
        return bool(a < b)
    except TypeError:
        return str(a) < str(b)


def reference_order(
    parts: list[list[tuple[str, dict[str, Any]]]], sort: tuple[tuple[str, bool], ...]
) -> list[tuple[str, dict[str, Any]]]:
    if not sort:
        return [pair for part in parts for pair in part]
    names = tuple(k for k, _ in sort)
    dirs = tuple(d for _, d in sort)

    def key(entry: tuple[str, dict[str, Any]]) -> _RefKey:
        return _RefKey(tuple(entry[1].get(n) for n in names), dirs)

    return list(heapq.merge(*parts, key=key))


# -- helpers ------------------------------------------------------------------


def coll(site: str, items: list[dict[str, Any]], **extra: Any) -> Collection:
    c = decode_collection(site, orjson.dumps({"servers": items, **extra}))
    assert c is not None
    return c


def rendered(
    c: Collection, listing: Listing, query: str = "", service: str = "compute"
) -> dict[str, Any]:
    body = render(
        c,
        listing,
        service=service,
        entry_url="http://gw.test/compute",
        path="/v2.1/servers",
        query=query,
    )
    data: dict[str, Any] = orjson.loads(body)
    return data


def next_positions(data: dict[str, Any], links_key: str = "servers_links") -> dict[str, State]:
    links = [ln["href"] for ln in data.get(links_key, []) if ln["rel"] == "next"]
    assert len(links) == 1
    marker = dict(parse_qsl(urlsplit(links[0]).query))["marker"]
    return decode_marker(marker)


def names(data: dict[str, Any]) -> list[Any]:
    return [i.get("name") for i in data["servers"]]


# -- what a collection is -----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"id": "x", "servers": []}',
        b'{"servers": [], "volumes": []}',
        b'{"server": {"name": "a"}}',
        b'{"servers": [{"id": "a"}, 3]}',
        b'{"servers": [{"id": "a"}, null]}',
    ],
)
def test_what_is_not_a_collection(body: bytes) -> None:
    assert decode_collection("A", body) is None


def test_a_collection_and_whether_it_says_more() -> None:
    c = decode_collection("A", b'{"servers": [{"id": "1"}], "links": [], "schema": "x"}')
    assert c is not None
    assert (c.key, c.items, c.more) == ("servers", [("A", {"id": "1"})], {"A": False})
    for extra in (
        {"servers_links": [{"rel": "next", "href": "h"}]},
        {"next": "/v2/images?marker=1"},
        {"links": {"next": "http://ks/users?marker=1"}},
    ):
        c = coll("A", [{"id": "1"}], **extra)
        assert c.more == {"A": True}, extra
    for extra in (
        {"servers_links": [{"rel": "prev", "href": "h"}]},
        {"next": None},
        {"links": {"next": None}},
        {"links": [{"rel": "next"}]},
    ):
        c = coll("A", [{"id": "1"}], **extra)
        assert c.more == {"A": False}, extra


def test_empty_list_is_a_collection() -> None:
    c = coll("A", [])
    assert c.items == [] and c.more == {"A": False}


# -- order --------------------------------------------------------------------


def test_without_sort_keys_site_order() -> None:
    a = coll("A", [{"id": "a1", "name": "z"}, {"id": "a2", "name": "y"}])
    b = coll("B", [{"id": "b1", "name": "a"}])
    merged = combine(Listing(), [a, b])
    assert [(s, i["id"]) for s, i in merged.items] == [("A", "a1"), ("A", "a2"), ("B", "b1")]
    assert merged.more == {"A": False, "B": False}
    assert merged.template["servers"] == [{"id": "a1", "name": "z"}, {"id": "a2", "name": "y"}]


def test_none_sorts_lowest_ascending_and_last_descending() -> None:
    a = [{"id": "a1"}, {"id": "a2", "name": "b"}]
    b = [{"id": "b1", "name": None}, {"id": "b2", "name": "a"}]
    asc = combine(listing_of("compute", "sort_key=name&sort_dir=asc"), [coll("A", a), coll("B", b)])
    ids = [i["id"] for _, i in asc.items]
    assert sorted(ids[:2]) == ["a1", "b1"] and ids[2:] == ["b2", "a2"]  # a tie, then by name
    a = [{"id": "a2", "name": "b"}, {"id": "a1"}]
    b = [{"id": "b2", "name": "a"}, {"id": "b1", "name": None}]
    desc = combine(
        listing_of("compute", "sort_key=name&sort_dir=desc"), [coll("A", a), coll("B", b)]
    )
    ids = [i["id"] for _, i in desc.items]
    assert ids[:2] == ["a2", "b2"] and sorted(ids[2:]) == ["a1", "b1"]


def test_mixed_types_none_then_numbers_then_strings() -> None:
    a = [{"v": None}, {"v": False}, {"v": 1.5}, {"v": "10"}]
    b = [{"v": -3}, {"v": True}, {"v": 2}, {"v": "9"}, {"v": "a"}]
    merged = combine(listing_of("network", "sort_key=v"), [coll("A", a), coll("B", b)])
    assert [i["v"] for _, i in merged.items] == [None, -3, False, True, 1.5, 2, "10", "9", "a"]


def test_a_direction_per_key() -> None:
    a = [{"x": 1, "y": "b"}, {"x": 1, "y": "a"}, {"x": 2, "y": "z"}]
    b = [{"x": 1, "y": "c"}, {"x": 2, "y": "y"}]
    listing = listing_of("network", "sort_key=x&sort_dir=asc&sort_key=y&sort_dir=desc")
    merged = combine(listing, [coll("A", a), coll("B", b)])
    assert [(i["x"], i["y"]) for _, i in merged.items] == [
        (1, "c"),
        (1, "b"),
        (1, "a"),
        (2, "z"),
        (2, "y"),
    ]


def test_unorderable_values_compare_as_text() -> None:
    a = [{"v": {"k": 1}}, {"v": [1, "x"]}]
    b = [{"v": [1, 2]}, {"v": "s"}]
    listing = listing_of("network", "sort_key=v")
    merged = combine(listing, [coll("A", a), coll("B", b)])
    parts = [[("A", i) for i in a], [("B", i) for i in b]]
    assert merged.items == reference_order(parts, listing.sort)


def test_a_service_default_direction() -> None:
    a = [{"name": "b"}, {"name": "a"}]
    b = [{"name": "c"}]
    merged = combine(listing_of("compute", "sort_key=name"), [coll("A", a), coll("B", b)])
    assert [i["name"] for _, i in merged.items] == ["c", "b", "a"]


def test_merges_of_merges() -> None:
    listing = listing_of("network", "sort_key=n&sort_dir=asc")
    inner = combine(listing, [coll("A", [{"n": 1}, {"n": 4}]), coll("B", [{"n": 2}])])
    outer = combine(listing, [inner, coll("C", [{"n": 3}])])
    assert [(s, i["n"]) for s, i in outer.items] == [("A", 1), ("B", 2), ("C", 3), ("A", 4)]
    inner = combine(Listing(), [coll("A", [{"n": 1}]), coll("B", [{"n": 2}])])
    outer = combine(Listing(), [coll("C", [{"n": 3}]), inner])
    assert [s for s, _ in outer.items] == ["C", "A", "B"]
    assert outer.more == {"C": False, "A": False, "B": False}


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, -1.0, 2.0]),
    st.sampled_from(["", "a", "B", "b", "10", "9"]),
)
_rare = st.one_of(_values, st.lists(st.integers(0, 2), max_size=2), st.just({"k": 1}))


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.lists(
            st.fixed_dictionaries(
                {}, optional={"x": _values, "y": _values, "id": st.text("ab", max_size=2)}
            ),
            max_size=6,
        ),
        min_size=1,
        max_size=6,
    ),
    sort=st.lists(st.tuples(st.sampled_from(["x", "y"]), st.booleans()), max_size=2),
    ordered=st.booleans(),
    odd=st.booleans(),
    rare=st.lists(_rare, max_size=2),
)
def test_order_is_the_k_way_merge_it_always_was(
    parts: list[list[dict[str, Any]]],
    sort: list[tuple[str, bool]],
    ordered: bool,
    odd: bool,
    rare: list[Any],
) -> None:
    """Whatever the values and whether each site's page is in order or not,
    ties included: the same order as the reference merge."""
    if odd:  # values that only compare as text take the general path
        for i, v in enumerate(rare):
            parts[0].insert(i, {"x": v})
    dirs = tuple(d for _, d in sort)
    for part in parts:
        if ordered:
            part.sort(key=lambda i: _RefKey(tuple(i.get(k) for k, _ in sort), dirs))
    sites = [f"S{n}" for n in range(len(parts))]
    listing = Listing(sort=tuple(sort))
    merged = combine(listing, [coll(s, p) for s, p in zip(sites, parts, strict=True)])
    pairs = [[(s, i) for i in p] for s, p in zip(sites, parts, strict=True)]
    assert merged.items == reference_order(pairs, listing.sort)


# -- limit and positions ------------------------------------------------------


def test_limit_positions_and_the_site_key() -> None:
    a = coll("A", [{"id": "a1", "name": "a"}, {"id": "a2", "name": "d"}])
    b = coll(
        "B",
        [{"id": "b1", "name": "b"}, {"id": "b2", "name": "e"}],
        servers_links=[{"rel": "next", "href": "http://b/servers?marker=b2"}],
    )
    c = coll("C", [{"id": "c1", "name": "c"}])
    d = coll("D", [{"id": "d1", "name": "f"}])
    e = coll("E", [])
    query = "limit=3&sort_key=name&sort_dir=asc"
    listing = listing_of("compute", query)
    merged = combine(listing, [a, b, c, d, e])
    data = rendered(merged, listing, query)
    assert data["servers"] == [
        {"id": "a1", "name": "a", SITE_KEY: "A"},
        {"id": "b1", "name": "b", SITE_KEY: "B"},
        {"id": "c1", "name": "c", SITE_KEY: "C"},
    ]
    assert next_positions(data) == {"A": "a1", "B": "b1", "C": DONE, "D": None, "E": DONE}
    # What was not returned is not marked.
    assert all(SITE_KEY not in i for _, i in merged.items[3:])
    link = data["servers_links"][0]["href"]
    assert link.startswith("http://gw.test/compute/v2.1/servers?limit=3&sort_key=name")


def test_a_site_with_more_is_not_done_when_all_it_gave_is_taken() -> None:
    a = coll("A", [{"id": "a1"}], servers_links=[{"rel": "next", "href": "h"}])
    b = coll("B", [{"id": "b1"}])
    listing = listing_of("compute", "")
    data = rendered(combine(listing, [a, b]), listing)
    assert next_positions(data) == {"A": "a1", "B": DONE}


def test_positions_of_an_earlier_page_are_kept_and_no_ids_means_done() -> None:
    a = coll("A", [{"name": "x"}, {"name": "y"}], servers_links=[{"rel": "next", "href": "h"}])
    b = coll("B", [{"id": "b1"}, {"id": "b2"}])
    raw = orjson.dumps({"A": None, "B": None, "Z": True})
    marker = "sc1." + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    query = f"limit=3&marker={marker}"
    listing = listing_of("compute", query)
    data = rendered(combine(listing, [a, b]), listing, query)
    assert [i[SITE_KEY] for i in data["servers"]] == ["A", "A", "B"]
    assert next_positions(data) == {"A": DONE, "B": "b1", "Z": True}


def test_last_page_has_no_next_link() -> None:
    listing = listing_of("compute", "limit=5")
    data = rendered(combine(listing, [coll("A", [{"id": "1"}]), coll("B", [])]), listing)
    assert "servers_links" not in data
    listing = listing_of("compute", "limit=0")
    data = rendered(combine(listing, [coll("A", [{"id": "1"}])]), listing, "limit=0")
    assert data["servers"] == [] and next_positions(data) == {"A": None}


def test_image_and_identity_links() -> None:
    a = decode_collection("A", orjson.dumps({"images": [{"id": "1"}], "next": "/v2/images?m=1"}))
    assert a is not None
    listing = listing_of("image", "")
    body = orjson.loads(
        render(
            combine(listing, [a]),
            listing,
            service="image",
            entry_url="http://gw/image",
            path="/v2/images",
            query="",
        )
    )
    assert body["next"].startswith("/v2/images?marker=sc1.")
    u = decode_collection("A", orjson.dumps({"users": [{"id": "u"}], "links": {"next": None}}))
    assert u is not None
    body = orjson.loads(
        render(
            combine(listing, [u]),
            listing,
            service="identity",
            entry_url="http://gw/identity",
            path="/v3/users",
            query="",
        )
    )
    assert body["links"] == {"self": "http://gw/identity/v3/users", "next": None, "previous": None}


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 4), min_size=1, max_size=5),
    more=st.lists(st.booleans(), min_size=5, max_size=5),
    limit=st.one_of(st.none(), st.integers(0, 12)),
    sort=st.booleans(),
)
def test_pages_and_positions_as_ever(
    sizes: list[int], more: list[bool], limit: int | None, sort: bool
) -> None:
    """The page is the merge's first ``limit`` items, each marked with its
    site; a site is done when all it has was taken and it said no more, else
    at its last id taken, else not started."""
    parts = []
    for n, size in enumerate(sizes):
        items = [{"id": f"{n}-{i}", "name": f"{(i * 7 + n) % 5}"} for i in range(size)]
        links = [{"rel": "next", "href": "h"}] if more[n] else []
        parts.append(coll(f"S{n}", items, servers_links=links))
    query = ("&sort_key=name&sort_dir=asc" if sort else "") + (
        f"&limit={limit}" if limit is not None else ""
    )
    listing = listing_of("compute", query)
    merged = combine(listing, parts)
    order = list(merged.items)
    data = rendered(merged, listing, query)
    taken = order if limit is None else order[:limit]
    assert data["servers"] == [{**i, SITE_KEY: s} for s, i in taken]
    expected: dict[str, State] = {}
    for n, size in enumerate(sizes):
        site = f"S{n}"
        got = [i for s, i in taken if s == site]
        if len(got) == size and not more[n]:
            expected[site] = DONE
        elif got:
            expected[site] = got[-1]["id"]
        else:
            expected[site] = None
    if all(v is DONE for v in expected.values()):
        assert "servers_links" not in data
    else:
        assert next_positions(data) == expected


def test_folded_items_are_what_is_rendered() -> None:
    """The items can be replaced (replicas folded into one item)."""
    a = coll("A", [{"id": "1", "name": "x"}])
    b = coll("B", [{"id": "2", "name": "x"}])
    listing = Listing()
    merged = combine(listing, [a, b])
    merged.items = [("A", {"id": "h", "name": "x"})]
    data = rendered(merged, listing)
    assert data["servers"] == [{"id": "h", "name": "x", SITE_KEY: "A"}]
    assert "servers_links" not in data
