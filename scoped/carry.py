"""How a scope travels on a request, and the names of the headers it
travels in (docs/design.md §4, §8): every header name scoped reads or
writes is spelled here once.

The client sends ``X-Scope`` and appends the scope to its token:
``X-Auth-Token: <token>!scope!<unpadded base64url(scope)>``. The suffix is
what makes the scope follow a workflow (Nova calling Glance with the user's
token). Identity services get the bare token; everyone else gets it as it came.
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache

from scoped_grammar import ScopeError

SUFFIX = "!scope!"
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
HOP_HEADER = "x-scoped-hop"
"""Marks a request one gateway forwards to another: ``<origin>><target>``.
The receiving gateway serves it locally and never forwards it again."""
SCOPE_HEADER = "x-scope"
"""The scope, as text; wins over a token suffix. Every response carries the
scope applied in it, completed with the answering site as ``*``."""
SITES_HEADER = "x-scope-sites"
"""On every response: each site tried, ``SITE=OUTCOME;t=MS``, in plan order."""
AUTH_TOKEN = "x-auth-token"
SUBJECT_TOKEN = "x-subject-token"
"""The token a ``GET .../auth/tokens`` validates."""
SERVICE_TOKEN = "x-service-token"
"""The calling service's own token, sent beside the user's (keystonemiddleware)."""
TOKEN_HEADERS = (AUTH_TOKEN, SUBJECT_TOKEN)
DISCOVERY_PATH = "/.well-known/scoped"
"""Where a gateway says what it knows: ``{"site": ..., "sites": [...],
"services": {...}}`` (docs/design.md §8). Named here, with the headers, so a
client reads it without importing the gateway."""
"""The token headers that may carry the scope suffix: read by the gateway,
stripped of it for the identity service."""


@lru_cache(maxsize=4096)
def encode_scope(text: str) -> str:
    """Unpadded base64url of the UTF-8 scope text."""
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


@lru_cache(maxsize=4096)
def decode_scope(data: str) -> str:
    """The scope text from the token suffix; a clear error if it is not one."""
    try:
        if not data or not _B64URL.fullmatch(data):
            raise ValueError(data)
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise ScopeError(
            "the scope on the token (after '!scope!') is not unpadded base64url of UTF-8 text"
        ) from None


def attach(token: str, scope_text: str) -> str:
    """``token`` carrying ``scope_text`` (any earlier suffix replaced)."""
    return f"{strip(token)}{SUFFIX}{encode_scope(scope_text)}"


def strip(token: str) -> str:
    """The bare token, without a scope suffix."""
    cut = token.find(SUFFIX)
    return token if cut < 0 else token[:cut]


def scope_of_token(token: str) -> str | None:
    """The scope text a token carries, or None."""
    cut = token.find(SUFFIX)
    if cut < 0:
        return None
    return decode_scope(token[cut + len(SUFFIX) :])


def hop_value(origin: str, target: str) -> str:
    return f"{origin}>{target}"


def parse_hop(value: str) -> tuple[str, str] | None:
    origin, sep, target = value.partition(">")
    return (origin.strip(), target.strip()) if sep else None
