"""Several sites' answers -> one answer (docs/design.md §3, ``&``).

Lists are merged into one response of the same shape (nova ``servers`` with
``servers_links``, neutron/cinder ``<name>_links``, glance ``images`` with
``next``/``first``/``schema``, keystone ``users`` with ``links``), in site
order or by the request's sort keys (k-way merge of the sites' sorted pages).
``limit`` applies to the merged list and the next link carries a composite
marker. Anything that is not a list: the leftmost answer.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .paging import DONE, Listing, State, encode_marker, with_marker

_META_KEYS = frozenset({"links", "next", "first", "schema", "previous"})


@dataclass
class Collection:
    """A list answer, kept decoded until the response is written."""

    key: str
    template: dict[str, Any]
    """The leftmost site's body: every key but the list comes from it."""
    items: list[tuple[str, dict[str, Any]]]
    """(site, item), in merged order."""
    more: dict[str, bool] = field(default_factory=dict)
    """Per site: whether it said it has a next page."""


SITE_KEY = "OS-SCOPE:site"
"""The site an item of a merged list comes from: an extension attribute in
OpenStack's style, ignored by clients, shown by ``-f json``."""


def decode_collection(site: str, body: bytes) -> Collection | None:
    """The list in a JSON body, if the body is a list answer."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or "id" in data:
        return None
    key: str | None = None
    for k, v in data.items():
        if isinstance(v, list) and k not in _META_KEYS and not k.endswith("_links"):
            if key is not None:
                return None  # two lists: not a collection we know how to merge
            key = k
    if key is None:
        return None
    items = data[key]
    if not all(isinstance(i, dict) for i in items):
        return None
    return Collection(key, data, [(site, i) for i in items], {site: _has_next(data, key)})


def _has_next(data: dict[str, Any], key: str) -> bool:
    links = data.get(f"{key}_links")
    if isinstance(links, list) and any(
        isinstance(link, dict) and link.get("rel") == "next" for link in links
    ):
        return True
    if data.get("next"):
        return True
    ks_links = data.get("links")
    return isinstance(ks_links, dict) and bool(ks_links.get("next"))


def combine(listing: Listing, parts: Sequence[Collection]) -> Collection:
    """One collection from several, in site order or by the sort keys."""
    first = parts[0]
    more: dict[str, bool] = {}
    for p in parts:
        more.update(p.more)
    if listing.sort:
        items = list(heapq.merge(*(p.items for p in parts), key=_sorter(listing.sort)))
    else:
        items = [i for p in parts for i in p.items]
    return Collection(first.key, first.template, items, more)


def render(
    coll: Collection,
    listing: Listing,
    *,
    service: str,
    entry_url: str,
    path: str,
    query: str,
    keep: Callable[[bytes], str] | None = None,
) -> bytes:
    """The merged body: ``limit`` applied, next link with a composite marker
    (kept in the marker store by ``keep`` when too long for a link)."""
    taken = coll.items[: listing.limit] if listing.limit is not None else coll.items
    positions = _positions(coll, taken, listing)
    has_next = any(state is not DONE for state in positions.values())
    body = dict(coll.template)
    for site, item in taken:
        item[SITE_KEY] = site
    body[coll.key] = [item for _, item in taken]
    next_query = with_marker(query, encode_marker(positions, keep)) if has_next else None
    self_url = f"{entry_url}{path}" + (f"?{query}" if query else "")
    links_key = f"{coll.key}_links"
    if service == "image" or "next" in body:
        body.pop("next", None)
        if next_query is not None:
            body["next"] = f"{path}?{next_query}"
    elif service == "identity" or isinstance(body.get("links"), dict):
        links = dict(body.get("links") or {})
        links["self"] = self_url
        links["next"] = f"{entry_url}{path}?{next_query}" if next_query is not None else None
        links.setdefault("previous", None)
        body["links"] = links
    else:
        body.pop(links_key, None)
        if next_query is not None:
            body[links_key] = [{"rel": "next", "href": f"{entry_url}{path}?{next_query}"}]
    return orjson.dumps(body)


def _positions(
    coll: Collection, taken: list[tuple[str, dict[str, Any]]], listing: Listing
) -> dict[str, State]:
    """Where each site stands after this page (see paging.py)."""
    positions: dict[str, State] = dict(listing.positions)
    total: dict[str, int] = {}
    for site, _ in coll.items:
        total[site] = total.get(site, 0) + 1
    last: dict[str, dict[str, Any]] = {}
    count: dict[str, int] = {}
    for site, item in taken:
        last[site] = item
        count[site] = count.get(site, 0) + 1
    for site, more in coll.more.items():
        got = count.get(site, 0)
        if got == total.get(site, 0) and not more:
            positions[site] = DONE
        elif got:
            item_id = last[site].get("id")
            # Without ids a site cannot be resumed: report it done rather
            # than return its items twice.
            positions[site] = str(item_id) if item_id is not None else DONE
        else:
            positions.setdefault(site, None)
    return positions


class _Key:
    """Multi-key sort order with a direction per key; None sorts lowest."""

    __slots__ = ("values",)
    dirs: tuple[bool, ...] = ()

    def __init__(self, values: tuple[Any, ...]) -> None:
        self.values = values

    def __lt__(self, other: _Key) -> bool:
        for a, b, desc in zip(self.values, other.values, self.dirs, strict=False):
            if a == b:
                continue
            less = _less(a, b)
            return not less if desc else less
        return False


def _less(a: Any, b: Any) -> bool:
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return ra < rb
    try:
        return bool(a < b)
    except TypeError:
        return str(a) < str(b)


def _rank(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, (int, float)):
        return 1
    if isinstance(v, str):
        return 2
    return 3


def _sorter(sort: tuple[tuple[str, bool], ...]) -> Any:
    names = tuple(k for k, _ in sort)
    key_type = type("_SortKey", (_Key,), {"dirs": tuple(d for _, d in sort), "__slots__": ()})

    def key(entry: tuple[str, dict[str, Any]]) -> _Key:
        item = entry[1]
        return key_type(tuple(item.get(n) for n in names))  # type: ignore[no-any-return]

    return key


def created_ids(body: bytes | None) -> str | None:
    """The id of what a write created, for the per-site report of a failed ``&``."""
    if not body:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict):
        if isinstance(data.get("id"), (str, int)):
            return str(data["id"])
        for value in data.values():
            if isinstance(value, dict) and isinstance(value.get("id"), (str, int)):
                return str(value["id"])
    return None
