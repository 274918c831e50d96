"""Links in answers, pointed back at this gateway: so a client that follows
one comes back here, with its scope (docs/design.md §5).

Only what an API defines as a link is rewritten, never data: the
``Location`` header, and in a JSON body the values under ``links``,
``*_links``, ``next``, ``previous``, ``first``, ``self``, ``schema`` and
``href`` (version documents, nova's and keystone's entities and lists,
glance's paging). An endpoint URL stored in Keystone, a server's metadata or
an image property that happens to name the site stays as it is: a client that
reads a value and writes it back stores what was there. A link is rewritten
when it is the site's endpoint (``base``) followed by ``/``, ``?``, ``#`` or
nothing. Placement writes its links as paths from its own root
(``/resource_providers/<uuid>``), which do not resolve at a gateway that
serves it under a prefix: they get the gateway's entry path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson

LINK_KEYS = frozenset({"links", "next", "previous", "first", "self", "schema", "href"})
_ROOTED = frozenset({"placement"})
"""Services whose links are paths from the service's own root."""


def is_link_key(key: str) -> bool:
    return key in LINK_KEYS or key.endswith("_links")


def rewrite_links(body: bytes, base: str, entry_url: str, service: str = "") -> bytes:
    """``body`` with the links to ``base`` pointed at ``entry_url``; the same
    bytes when there is none (the usual case costs a substring search).

    A list whose every item links to its site (Nova's ``self`` and
    ``bookmark``) is rewritten in its bytes when they show that every string
    starting with ``base`` is a link (:func:`_substituted`); else decoded and
    walked. A page of 5 Nova servers: 42 µs decoded, walked and encoded, a
    few µs replaced (``tests/bench/bench_core.py``, "Nova's item links": the
    whole per-site merge of such pages)."""
    rooted = service in _ROOTED and b'"/' in body
    if not rooted and (not base or base == entry_url or base.encode() not in body):
        return body
    if not rooted:
        replaced = _substituted(body, base, entry_url)
        if replaced is not None:
            return replaced
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    rewriter = _Rewriter(base, entry_url, rooted)
    if type(data) is dict:
        rewriter.in_dict(data, False)
    elif type(data) is list:
        rewriter.in_list(data, False)
    return orjson.dumps(data) if rewriter.changed else body


_FOLLOWS = (b"/", b"?", b"#", b'"')
"""What may follow ``base`` in a link to it: a path, a query, a fragment, nothing."""
_KEYED = tuple(
    b'"' + key.encode() + sep
    for key in ("href", "self", "next", "previous", "first", "schema", "links")
    for sep in (b'":', b'": ')
)
"""A link key and its colon, as orjson and json.dumps write them (the usual first)."""


def _safe(url: str) -> bool:
    """Whether ``url`` is written in JSON as it is (nothing escaped)."""
    return url.isascii() and url.isprintable() and '"' not in url and "\\" not in url


def _substituted(body: bytes, base: str, entry_url: str) -> bytes | None:
    """:func:`rewrite_links` by replacing ``"BASE`` with ``"ENTRY`` in the
    bytes, when the bytes prove the walk would rewrite every such string and
    nothing else; None when they do not (the walk decides).

    The proof, with C-speed counts only: every ``"BASE`` is followed by what
    a link to ``base`` may continue with (not ``BASEx``: another port), and
    every one is the value of a link key written ``"href":"BASE`` (or
    ``"href": "BASE``), the key's quote not escaped (a key holding ``\\"href``
    is another key). In valid JSON such a value is a whole string that
    starts with ``base`` under a link key: what the walk rewrites. A link
    written otherwise (nested deeper under a link key, in a list, another
    spacing) makes the counts differ: then the walk. A body that is not
    valid JSON at all may have such links replaced too, where the walk,
    failing to decode it, left it as it came.
    """
    if not (_safe(base) and _safe(entry_url)):
        return None
    quoted = b'"' + base.encode()
    total = body.count(quoted)
    if total == 0:
        return body  # no string starts with base: nothing to rewrite
    followed = 0
    for follow in _FOLLOWS:  # the usual "BASE/ first: one count
        followed += body.count(quoted + follow)
        if followed == total:
            break
    if followed != total:
        return None
    direct = 0
    for keyed in _KEYED:
        found = body.count(keyed + quoted)
        if found:
            direct += found - body.count(b"\\" + keyed + quoted)
            if direct >= total:
                break
    if direct != total:
        return None
    return body.replace(quoted, b'"' + entry_url.encode())


@lru_cache(maxsize=1024)
def _path(url: str) -> str:
    return urlsplit(url).path.rstrip("/") if url else ""


class _Rewriter:
    __slots__ = ("base", "base_path", "changed", "entry_path", "entry_url", "rooted")

    def __init__(self, base: str, entry_url: str, rooted: bool) -> None:
        self.base = base if base != entry_url else ""
        self.entry_url = entry_url
        self.rooted = rooted
        self.base_path = _path(base)
        self.entry_path = _path(entry_url)
        self.changed = False

    def in_dict(self, node: dict[str, Any], in_link: bool) -> None:
        for key, value in node.items():
            kind = type(value)
            if kind is str:
                if in_link or key in LINK_KEYS or key.endswith("_links"):
                    new = self.link(value)
                    if new is not value:
                        node[key] = new
            elif kind is dict:
                self.in_dict(value, in_link or key in LINK_KEYS or key.endswith("_links"))
            elif kind is list:
                self.in_list(value, in_link or key in LINK_KEYS or key.endswith("_links"))

    def in_list(self, node: list[Any], in_link: bool) -> None:
        for i, value in enumerate(node):
            kind = type(value)
            if kind is str:
                if in_link:
                    new = self.link(value)
                    if new is not value:
                        node[i] = new
            elif kind is dict:
                self.in_dict(value, in_link)
            elif kind is list:
                self.in_list(value, in_link)

    def link(self, value: str) -> str:
        base = self.base
        if base and value.startswith(base):
            rest = value[len(base) :]
            if not rest or rest[0] in "/?#":
                self.changed = True
                return self.entry_url + rest
        if self.rooted and value.startswith("/") and not value.startswith("//"):
            # A path from the site's root: under the base's path, if it has one.
            path = self.base_path
            if path and (value == path or value.startswith(path + "/")):
                value = value[len(path) :]
            elif path:
                return value
            if not value.startswith(self.entry_path + "/"):
                self.changed = True
                return self.entry_path + value
        return value


def rewrite_location(
    headers: list[tuple[str, str]], base: str, entry_url: str
) -> list[tuple[str, str]]:
    """The ``Location`` header rewritten like links in bodies."""
    if not base or base == entry_url:
        return headers
    out = headers
    for i, (name, value) in enumerate(headers):
        if name in ("location", "content-location") and value.startswith(base):
            rest = value[len(base) :]
            if not rest or rest[0] in "/?#":
                if out is headers:
                    out = list(headers)
                out[i] = (name, entry_url + rest)
    return out
