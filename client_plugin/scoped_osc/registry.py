"""What the home gateway knows: its site and the sites of the federation,
read from ``GET /.well-known/scoped`` at the origin of the cloud's auth URL.

Best effort and unauthenticated: a client that can read it checks site
names before it sends anything (a typo is refused with "did you mean");
one that cannot (a site running the WSGI filter, an old gateway, no
network) goes on as before and the gateway judges the scope.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from scoped.gateway import DISCOVERY_PATH

LOG = logging.getLogger("scoped_osc")

TIMEOUT = 3.0
"""Seconds to wait for the gateway's answer; then go on without it."""


@dataclass(frozen=True)
class Known:
    """A gateway's own site and every site it knows, in preference order."""

    site: str
    sites: tuple[str, ...]


def discovery_url(auth_url: str) -> str | None:
    """``http://gw:18000/scope/X/identity/v3`` -> ``http://gw:18000/.well-known/scoped``."""
    parts = urlsplit(auth_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}{DISCOVERY_PATH}"


def fetch_known(auth_url: str | None, verify: bool | str = True) -> Known | None:
    """The gateway's document, or None if it cannot be read as one."""
    url = discovery_url(auth_url) if auth_url else None
    if url is None:
        return None
    try:
        resp = requests.get(url, timeout=TIMEOUT, verify=verify)
        data = resp.json() if resp.status_code == 200 else None
    except (requests.RequestException, ValueError) as err:
        LOG.debug("no site list from %s: %s", url, err)
        return None
    if not isinstance(data, dict):
        return None
    site, sites = data.get("site"), data.get("sites")
    if not isinstance(site, str) or not isinstance(sites, list):
        return None
    if not all(isinstance(s, str) for s in sites):
        return None
    return Known(site, tuple(sites))
