"""Replica handles: one ID for a resource created at several sites (``&``)
where each site chose its own ID (docs/design.md §3, replicated writes).

A handle is ``scoped.`` and the unpadded base64url of the JSON object
``{site: id, ...}`` in plan order. It is stateless, like the composite
paging marker: any gateway of the federation reads it back, after a restart
or behind a load balancer, and no site ever sees it (each gets its own ID in
the path). The dot keeps it apart from anything a site makes: UUIDs, Nova's
integer-like flavor IDs and Keystone's hex IDs have none, and base64url has
no dot either.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

import orjson

PREFIX = "scoped."
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_MAX = 8192
"""A handle longer than this is not read (bounds the decoding work)."""


class HandleTooLong(ValueError):
    """Replicas whose IDs make a handle longer than any gateway reads back."""


def make_handle(ids: Mapping[str, str]) -> str:
    """The handle of the replicas ``{site: id}``; :class:`HandleTooLong` past
    what :func:`read_handle` takes (found by fuzzing)."""
    raw = orjson.dumps(dict(ids))
    handle = PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if len(handle) > _MAX:
        raise HandleTooLong(
            f"the IDs of {len(ids)} replicas make a handle of {len(handle)} characters; "
            f"at most {_MAX}"
        )
    return handle


def read_handle(text: str) -> dict[str, str] | None:
    """``{site: id}`` from a handle, or None if ``text`` is not one."""
    if not text.startswith(PREFIX) or len(text) > _MAX:
        return None
    encoded = text[len(PREFIX) :]
    if not _ALPHABET.fullmatch(encoded):
        return None  # b64decode would drop what is not base64url, and read it anyway
    try:
        data = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict) or not data:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return None
    return data


def has_handle(path: str) -> bool:
    return PREFIX in path


def path_at(path: str, site: str) -> str | None:
    """``path`` with every handle in it replaced by ``site``'s ID; None if a
    handle names no replica at ``site``. A path without handles is returned
    as it is."""
    if PREFIX not in path:
        return path
    parts = path.split("/")
    for i, part in enumerate(parts):
        ids = read_handle(part)
        if ids is None:
            continue
        if site not in ids:
            return None
        parts[i] = ids[site]
    return "/".join(parts)


def path_handle(path: str) -> dict[str, str]:
    """``{site: id}`` of the first handle in ``path`` (empty if none)."""
    if PREFIX in path:
        for part in path.split("/"):
            ids = read_handle(part)
            if ids is not None:
                return ids
    return {}
