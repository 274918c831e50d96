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
import math
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any

import orjson

from .paging import DONE, Listing, encode_marker, with_marker

_META_KEYS = frozenset({"links", "next", "first", "schema", "previous"})


Item = dict[str, Any]
Run = tuple[str, list[Item]]
"""A site and items of its, in its order: a decoded answer's list as it is."""


class Collection:
    """A list answer, kept decoded until the response is written.

    Performance: the items stay in the lists the sites' answers decoded to,
    one run per site, with no ``(site, item)`` tuple per item unless
    :attr:`items` is asked for; a sorted merge runs only as far as ``limit``
    needs, on keys Python compares natively (:func:`_ranks`) where a ``_Key``
    compared in Python per item cost more than the rest of the gateway.
    ``.venv/bin/python tests/bench/bench_core.py``, its ``* list over 1000
    sites`` rows (decode + combine + render, least CPU per site, old and new
    in alternating runs): in site order 6.9 -> 5.5 µs, sorted by 50
    89 -> 6.7 µs. ``tests/bench/bench_scale.py --quick --sites 1000``, the
    gateway's CPU per site call (least of 30, 3 alternating runs): 54 -> 51
    µs, within this shared machine's noise."""

    __slots__ = ("_head", "_items", "_order", "_runs", "key", "more", "template")

    def __init__(
        self,
        key: str,
        template: dict[str, Any],
        runs: list[Run],
        more: dict[str, bool],
        order: Iterator[tuple[str, Item]] | None = None,
    ) -> None:
        self.key = key
        self.template = template
        """The leftmost site's body: every key but the list comes from it."""
        self.more = more
        """Per site: whether it said it has a next page."""
        self._runs = runs
        """Every item, by site in site order (the order when unsorted)."""
        self._order = order
        """The merged order when sorted, taken from as far as needed."""
        self._head: list[tuple[str, Item]] = []
        """What :attr:`_order` gave so far."""
        self._items: list[tuple[str, Item]] | None = None

    @property
    def items(self) -> list[tuple[str, Item]]:
        """(site, item), in merged order; may be replaced (writes.py folds
        replicas into one item)."""
        if self._items is None:
            if self._order is None:
                self._items = [(site, i) for site, run in self._runs for i in run]
            else:
                self._head.extend(self._order)
                self._items = self._head
        return self._items

    @items.setter
    def items(self, items: list[tuple[str, Item]]) -> None:
        self._items = items

    def _ordered_runs(self) -> list[Run]:
        """The items in this collection's order, as runs."""
        if self._items is None and self._order is None:
            return self._runs
        runs: list[Run] = []
        for site, item in self.items:
            if runs and runs[-1][0] == site:
                runs[-1][1].append(item)
            else:
                runs.append((site, [item]))
        return runs

    def _taken_runs(self, limit: int | None) -> list[Run] | None:
        """The first ``limit`` items as runs, when in site order as decoded."""
        if self._items is not None or self._order is not None:
            return None
        if limit is None:
            return self._runs
        taken: list[Run] = []
        room = limit
        for site, run in self._runs:
            if room <= 0:
                break
            taken.append((site, run if len(run) <= room else run[:room]))
            room -= len(run)
        return taken

    def _taken(self, limit: int | None) -> list[tuple[str, Item]]:
        """The first ``limit`` items."""
        if self._items is not None or self._order is None:
            return self.items if limit is None else self.items[:limit]
        head = self._head
        if limit is None:
            head.extend(self._order)
            return head
        if len(head) < limit:
            head.extend(islice(self._order, limit - len(head)))
        return head[:limit]

    def _totals(self) -> dict[str, int]:
        """How many items of each site the collection holds."""
        total: dict[str, int] = {}
        if self._items is not None:
            for site, _ in self._items:
                total[site] = total.get(site, 0) + 1
        else:
            for site, run in self._runs:
                total[site] = total.get(site, 0) + len(run)
        return total


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
    for i in items:
        if not isinstance(i, dict):
            return None
    return Collection(key, data, [(site, items)], {site: _has_next(data, key)})


def _has_next(data: dict[str, Any], key: str) -> bool:
    links = data.get(key + "_links")
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
    sources = [p._ordered_runs() for p in parts]
    runs = [r for runs in sources for r in runs]
    order = _merged(listing.sort, sources) if listing.sort else None
    return Collection(first.key, first.template, runs, more, order)


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
    positions = dict(listing.positions)
    total = coll._totals()
    count: dict[str, int] = {}
    last: dict[str, Item] = {}
    out: list[Item] = []
    runs = coll._taken_runs(listing.limit)
    if runs is not None:
        for site, run in runs:
            if run:
                for item in run:
                    item[SITE_KEY] = site
                out += run
                count[site] = count.get(site, 0) + len(run)
                last[site] = run[-1]
    else:
        for site, item in coll._taken(listing.limit):
            item[SITE_KEY] = site
            out.append(item)
            count[site] = count.get(site, 0) + 1
            last[site] = item
    # Where each site stands after this page (see paging.py).
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
    has_next = any(state is not DONE for state in positions.values())
    body = dict(coll.template)
    body[coll.key] = out
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


def _merged(
    sort: tuple[tuple[str, bool], ...], sources: list[list[Run]]
) -> Iterator[tuple[str, Item]]:
    """The k-way merge of ``sources`` (each in its own order) by the sort
    keys: the very comparisons, and so the order, heapq.merge gave with a
    ``_Key`` per item, ties included (a tie breaks by heap position, not by
    site: an entry's second element never equals another's and is never less
    than it, as a ``_Key`` without ``__eq__`` was)."""
    flat: list[tuple[list[str] | str, list[Item]]] = []
    for runs in sources:
        if len(runs) == 1:
            flat.append(runs[0])
        else:
            flat.append(
                ([site for site, run in runs for _ in run], [i for _, run in runs for i in run])
            )
    keys = _ranks(sort, [items for _, items in flat])
    if keys is None:
        key_type = type("_SortKey", (_Key,), {"dirs": tuple(d for _, d in sort), "__slots__": ()})
        names = [n for n, _ in sort]
        keys = [[key_type(tuple(i.get(n) for n in names)) for i in items] for _, items in flat]
    return _heap_merge(flat, keys)


def _heap_merge(
    flat: list[tuple[list[str] | str, list[Item]]], keys: list[list[Any]]
) -> Iterator[tuple[str, Item]]:
    """heapq.merge's steps, on keys computed beforehand."""
    heap = [[k[0], frozenset((n,)), n, 0] for n, k in enumerate(keys) if k]
    heapq.heapify(heap)
    while len(heap) > 1:
        entry = heap[0]
        n, i = entry[2], entry[3]
        sites, items = flat[n]
        yield (sites if isinstance(sites, str) else sites[i]), items[i]
        i += 1
        if i < len(items):
            entry[0] = keys[n][i]
            entry[3] = i
            heapq.heapreplace(heap, entry)
        else:
            heapq.heappop(heap)
    if heap:
        n, i = heap[0][2], heap[0][3]
        sites, items = flat[n]
        for j in range(i, len(items)):
            yield (sites if isinstance(sites, str) else sites[j]), items[j]


_NATIVE = frozenset({type(None), bool, int, float, str})


def _ranks(sort: tuple[tuple[str, bool], ...], sources: list[list[Item]]) -> list[list[Any]] | None:
    """Per item, a key Python compares natively in the order of ``_Key``:
    per sort key, the value's place among all the values of that key (None,
    then numbers, then strings; equal values, 1 and True and 1.0, share a
    place), negated when descending; an int for one sort key, a tuple of
    them for several. None when a value is not None, a number or a string
    (or is NaN): then ``_Key`` itself."""
    columns: list[list[list[Any]]] = []
    for name, desc in sort:
        values = [[i.get(name) for i in items] for items in sources]
        try:
            distinct: set[Any] = set().union(*values)
        except TypeError:  # a list or an object
            return None
        types = {type(v) for v in distinct}
        if not types <= _NATIVE:
            return None
        if types == {str} and not desc:
            columns.append(values)  # strings compare as themselves
            continue
        nums = [v for v in distinct if v is not None and not isinstance(v, str)]
        if any(isinstance(v, float) and math.isnan(v) for v in nums):  # equal to nothing
            return None
        if types == {str}:
            ordered = sorted(distinct)
        else:
            strs = sorted([v for v in distinct if isinstance(v, str)])
            ordered = ([None] if None in distinct else []) + sorted(nums) + strs
        sign = -1 if desc else 1
        place = {v: sign * n for n, v in enumerate(ordered)}
        columns.append([list(map(place.__getitem__, vs)) for vs in values])
    if len(columns) == 1:
        return columns[0]
    return [list(zip(*per_key, strict=True)) for per_key in zip(*columns, strict=True)]


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
