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
    bytes when there is none (the usual case costs a substring search)."""
    rooted = service in _ROOTED and b'"/' in body
    if not rooted and (not base or base == entry_url or base.encode() not in body):
        return body
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    rewriter = _Rewriter(base, entry_url, rooted)
    data = rewriter.walk(data, False)
    return orjson.dumps(data) if rewriter.changed else body


class _Rewriter:
    __slots__ = ("base", "base_path", "changed", "entry_path", "entry_url", "rooted")

    def __init__(self, base: str, entry_url: str, rooted: bool) -> None:
        self.base = base
        self.entry_url = entry_url
        self.rooted = rooted
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
