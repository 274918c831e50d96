"""How one call to one site is addressed: URL and headers (docs/design.md §4, §5).

Local calls go to this site's backend; remote calls to the other site's entry
URL, marked with the hop header so that site serves them itself. The scope
suffix is stripped from token headers for the identity service only; every
other service gets the token as it came, so it can pass the scope on (with
the request's complete scope when it named one).

A service token (``X-Service-Token``) sent to another site is marked with the
scope ``<identity: ORIGIN>``: it was issued by this site's Keystone, and the
other site's keystonemiddleware validates it too (a stock nova-api sends one
with every call it makes on a user's behalf, from keystonemiddleware's user
plugin). The mark routes that validation back here (docs/design.md §4).
"""

from __future__ import annotations

from functools import lru_cache

from scoped_grammar import Scope, Site, canonical

from .carry import (
    AUTH_TOKEN,
    HOP_HEADER,
    SERVICE_TOKEN,
    SUFFIX,
    TOKEN_HEADERS,
    attach,
    hop_value,
    strip,
)
from .http import HOP_BY_HOP, REQUEST_ID, Request
from .sites import Registry

_NOT_FORWARDED = HOP_BY_HOP | {HOP_HEADER, REQUEST_ID}
"""Connection headers, the hop mark (set anew) and the request id (sent as
checked: :attr:`Request.request_id`)."""


@lru_cache(maxsize=64)
def _issued_at(site: str) -> str:
    """The scope that sends a token's validation to ``site``'s Keystone."""
    return canonical(Scope((("identity", Site(site)),)))


def upstream_headers(
    req: Request, registry: Registry, site: str, merging: bool
) -> list[tuple[str, str]]:
    """The headers to send to ``site`` for ``req``.

    The user's token carries the request's complete scope (``req.carried``)
    to every site and service but this site's Keystone, which gets it bare:
    a scope given only as ``X-Scope`` (or as an incomplete suffix) reaches a
    remote site's token validation and its services' own calls all the same.

    Every remote site of a fan-out gets the same headers but the hop mark:
    they are made once per request (kept on it, by what they depend on) and
    copied per site. Made per site, they were ~2 µs of each site call's CPU
    (tests/bench/bench_scale.py, 1000 sites; more with a token to carry).
    """
    shared = shared_headers(req, registry, site, merging)
    if site == registry.local:
        return shared.copy()
    return [*shared, (HOP_HEADER, hop_value(registry.local, site))]


def shared_headers(
    req: Request, registry: Registry, site: str, merging: bool
) -> list[tuple[str, str]]:
    """:func:`upstream_headers` without the hop mark (a remote site's is
    ``HOP_HEADER: hop_value(registry.local, site)``): the list every remote
    site of the request shares (or the local site's), not to be changed."""
    local = site == registry.local
    key = (merging, local, req.body.replayable, req.carried)
    made = req.memo
    shared = made.get(key)
    if shared is None:
        shared = made[key] = _shared_headers(req, registry.local, local, merging)
    return shared


def _shared_headers(req: Request, home: str, local: bool, merging: bool) -> list[tuple[str, str]]:
    """:func:`upstream_headers` but the hop mark: the same for every remote site."""
    strip_tokens = req.service == "identity" and local
    carried = None if strip_tokens else req.carried
    out: list[tuple[str, str]] = []
    for name, value in req.headers:
        if name in _NOT_FORWARDED:
            continue
        if name == "content-length" and req.body.replayable:
            continue  # the client library sets it from the bytes
        if merging and name == "accept-encoding":
            continue  # answers to merge must come as plain JSON
        if name == SERVICE_TOKEN and not local and SUFFIX not in value:
            out.append((name, attach(value, _issued_at(home))))
            continue
        if name == AUTH_TOKEN and carried is not None:
            out.append((name, attach(value, carried)))
            continue
        out.append((name, strip(value) if strip_tokens and name in TOKEN_HEADERS else value))
    out.append((REQUEST_ID, req.request_id))
    return out


def at_endpoint(base: str, req: Request, query: str) -> str:
    """``req``'s path and ``query`` under a site's endpoint ``base``."""
    return f"{base}{req.path}?{query}" if query else f"{base}{req.path}"
