"""What a list request asks for across sites: ``limit``, sort keys, and the
composite marker that says where each site stands.

A composite marker is opaque and URL-safe: ``sc1.`` and the unpadded base64url
of a JSON object ``{site: state}``, where a state is null (not started), an
item id (the last item of that site already returned) or true (that site has
nothing more). Paging through ``&`` with it returns every item exactly once.

A marker longer than :data:`INLINE_MAX` (a wide fan-out: at 1000 sites tens
of kilobytes) is kept in the site's marker store when it has one
(scoped/markers.py), and the link carries ``sc1~`` and its key instead.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from .errors import GatewayError

MARKER_PREFIX = "sc1."
STORED_PREFIX = "sc1~"
"""A marker kept in the store: ``sc1~`` and its key (scoped/markers.py)."""
INLINE_MAX = 2048
"""The longest marker written into a link when a store could keep it: about
25 sites with an item id each. Past it a link would soon be too long for
common proxies (8 KB: nginx's default large_client_header_buffers)."""
_STORED_KEY = re.compile(r"[A-Za-z0-9_-]{32}")
DONE = True

# Default direction of a sort key given without one, per service (as the
# services themselves default).
_DEFAULT_DIR_DESC = {"compute": True, "image": True, "block-storage": True}

State = str | bool | None


@dataclass(frozen=True)
class Listing:
    """The paging and sorting a request asks for."""

    limit: int | None = None
    sort: tuple[tuple[str, bool], ...] = ()
    """(key, descending) in priority order."""
    positions: dict[str, State] = field(default_factory=dict)
    """Where each site stands, from a composite marker; empty if none."""
    composite: bool = False
    stored: str | None = None
    """The key of a marker kept in the store (``sc1~KEY``), its positions not
    read yet: the gateway reads them (:func:`positions_of`) before planning."""


def listing_of(service: str, query: str) -> Listing:
    """Read limit, sort keys and a composite marker from a query string."""
    if not query:
        return Listing()
    pairs = parse_qsl(query, keep_blank_values=True)
    limit: int | None = None
    keys: list[str] = []
    dirs: list[str] = []
    glance_sort: list[tuple[str, bool]] = []
    positions: dict[str, State] = {}
    composite = False
    stored: str | None = None
    for name, value in pairs:
        if name == "limit":
            try:
                limit = int(value)
            except ValueError:
                limit = None  # the site will say what is wrong with it
            if limit is not None and limit < 0:
                limit = None
        elif name == "sort_key":
            keys.append(value)
        elif name == "sort_dir":
            dirs.append(value.lower())
        elif name == "sort":  # glance: sort=name:asc,created_at
            for part in value.split(","):
                key, _, direction = part.strip().partition(":")
                if key:
                    glance_sort.append((key, (direction or "desc").lower() != "asc"))
        elif name == "marker" and value.startswith(MARKER_PREFIX):
            positions = decode_marker(value)
            composite = True
        elif name == "marker" and value.startswith(STORED_PREFIX):
            stored = value[len(STORED_PREFIX) :]
            if not _STORED_KEY.fullmatch(stored):
                raise GatewayError(400, _NOT_OURS)
            composite = True
    default_desc = _DEFAULT_DIR_DESC.get(service, False)
    sort = [
        (key, (dirs[i] if i < len(dirs) else ("desc" if default_desc else "asc")) == "desc")
        for i, key in enumerate(keys)
    ]
    return Listing(limit, tuple(sort + glance_sort), positions, composite, stored)


_NOT_OURS = "the marker is not one this gateway made (a composite marker)"


def encode_marker(positions: dict[str, State], keep: Callable[[bytes], str] | None = None) -> str:
    """The marker for ``positions``: inline, or, past :data:`INLINE_MAX` and
    with ``keep`` (which keeps it and gives its key), ``sc1~KEY``."""
    raw = orjson.dumps(positions)
    inline = MARKER_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if keep is None or len(inline) <= INLINE_MAX:
        return inline
    return STORED_PREFIX + keep(raw)


def decode_marker(value: str) -> dict[str, State]:
    data = value[len(MARKER_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        raise GatewayError(400, _NOT_OURS) from None
    return positions_of(raw)


def positions_of(raw: bytes) -> dict[str, State]:
    """The positions a marker's JSON says (inline, or read from the store)."""
    try:
        decoded: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        decoded = None
    if not isinstance(decoded, dict) or not all(
        isinstance(k, str) and (v is None or v is True or isinstance(v, str))
        for k, v in decoded.items()
    ):
        raise GatewayError(400, _NOT_OURS)
    return decoded


def site_query(query: str, listing: Listing, site: str) -> str | None:
    """The query to send to ``site``: its own marker in place of the composite
    one; None if that site has nothing more to give."""
    if not listing.composite:
        return query
    state = listing.positions.get(site)
    if state is DONE:
        return None
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "marker"]
    if isinstance(state, str):
        pairs.append(("marker", state))
    return urlencode(pairs)


def with_marker(query: str, marker: str) -> str:
    """``query`` with ``marker`` replaced (other parameters kept, in order)."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "marker"]
    pairs.append(("marker", marker))
    return urlencode(pairs)
