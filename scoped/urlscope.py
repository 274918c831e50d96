"""A scope in the URL, for clients that can set nothing but an auth URL
(Terraform, gophercloud, Ansible, Horizon, any openstacksdk program):

    http://GATEWAY/scope/<unpadded base64url of the scope text>/identity/v3

is used as ``auth_url``. Every request under ``/scope/<scope>/`` has that
scope; Keystone's answers obtained through it (the token's catalog, version
documents, links) point at the same scoped prefix, so every later call of
the client carries it. This path form is a contract (docs/design.md §8).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from scoped_grammar import canonical, parse
from scoped_grammar.services import official_service_type

from .carry import encode_scope

PREFIX = "/scope/"


def split_scope_path(path: str) -> tuple[str | None, str, str]:
    """``/scope/XYZ/identity/v3`` -> (``XYZ``, ``/scope/XYZ``, ``/identity/v3``);
    ``(None, "", path)`` for a path without a scope. The scope is decoded (and
    refused, with a 400, if it is not one) where every scope is read."""
    if not path.startswith(PREFIX):
        return None, "", path
    cut = path.find("/", len(PREFIX))
    if cut < 0:
        return path[len(PREFIX) :], path, "/"
    return path[len(PREFIX) : cut], path[:cut], path[cut:]


def scope_url(gateway: str, scope_text: str, service_path: str = "/identity/v3") -> str:
    """The scoped URL of a gateway for ``scope_text`` (parsed, so a bad scope
    raises :class:`~scoped.errors.ScopeError` here, and written canonical)."""
    text = canonical(parse(scope_text))
    return f"{gateway.rstrip('/')}{PREFIX}{encode_scope(text)}{service_path}"


def _catalog(body: bytes) -> tuple[dict[str, Any], list[Any]] | None:
    """A Keystone answer's document and its catalog (a token's, or
    ``/v3/auth/catalog``'s), or None when it has none."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    token = data.get("token")
    catalog = token.get("catalog") if isinstance(token, dict) else data.get("catalog")
    return (data, catalog) if isinstance(catalog, list) else None


def rewrite_catalog(body: bytes, origin: str, prefix: str) -> bytes:
    """Endpoint URLs of this gateway (``origin``) in a Keystone answer's
    catalog (a token's, or ``/v3/auth/catalog``) put under ``prefix``."""
    if origin.encode() not in body:
        return body
    found = _catalog(body)
    if found is None:
        return body
    data, catalog = found
    changed = False
    start = origin + "/"
    scoped = origin + prefix + "/"
    for service in catalog:
        endpoints = service.get("endpoints") if isinstance(service, dict) else None
        for endpoint in endpoints if isinstance(endpoints, list) else ():
            url: Any = endpoint.get("url") if isinstance(endpoint, dict) else None
            if isinstance(url, str) and url.startswith(start) and not url.startswith(scoped):
                endpoint["url"] = scoped + url[len(start) :]
                changed = True
    return orjson.dumps(data) if changed else body


def rewrite_remote_catalog(body: bytes, entry: str, routes: Mapping[str, tuple[str, str]]) -> bytes:
    """The catalog of a token another site's Keystone issued, obtained
    through a scoped URL whose scope sends identity there: that site's
    endpoints put under this gateway's scoped prefix (``entry``, e.g.
    ``http://gw:18000/scope/XYZ``), so the client's later calls come back
    here and carry the scope instead of going to that site bare.

    ``routes`` maps a service type to (the path of that site's entry URL
    for it as this gateway knows it, this gateway's entry path for it):
    ``{"compute": ("/compute", "/compute")}``. An endpoint is matched by its
    service type and its path (its host is the site's public one, which need
    not be the address this gateway reaches it at); the rest of the path
    (``/v2.1``) is kept. An endpoint of a service this gateway does not
    serve, or whose path is not under the site's entry path, stays as it is.
    """
    if not routes or b'"catalog"' not in body:
        return body
    found = _catalog(body)
    if found is None:
        return body
    data, catalog = found
    changed = False
    entry = entry.rstrip("/")
    for service in catalog:
        if not isinstance(service, dict) or not isinstance(service.get("type"), str):
            continue
        route = routes.get(official_service_type(service["type"]) or service["type"])
        endpoints = service.get("endpoints")
        if route is None or not isinstance(endpoints, list):
            continue
        remote_path, local_path = route
        for endpoint in endpoints:
            url: Any = endpoint.get("url") if isinstance(endpoint, dict) else None
            if not isinstance(url, str) or url.startswith(entry + "/"):
                continue
            parts = urlsplit(url)
            path = parts.path.rstrip("/")
            if not parts.netloc or not (path == remote_path or path.startswith(remote_path + "/")):
                continue
            rest = parts.path[len(remote_path) :]
            endpoint["url"] = entry + local_path + rest + (f"?{parts.query}" if parts.query else "")
            changed = True
    return orjson.dumps(data) if changed else body
