"""What the home gateway knows: its site and the sites of the federation,
read from ``GET /.well-known/scoped`` at the origin of the cloud's auth URL.

Best effort and unauthenticated: a client that can read it checks site
names before it sends anything (a typo is refused with "did you mean");
one that cannot (a site running the WSGI filter, an old gateway, no
network) goes on as before and the gateway judges the scope.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from scoped.carry import DISCOVERY_PATH

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


def known_for(config: Mapping[str, Any]) -> Known | None:
    """What the gateway of a cloud config (openstacksdk's, or osc-lib's
    ``get_configuration()``) knows: its auth URL's origin, verified as the
    cloud says (``cacert``, ``verify``/``insecure``)."""
    auth = config.get("auth") or {}
    if config.get("verify") is False or config.get("insecure") is True:
        verify: bool | str = False
    else:
        verify = str(config["cacert"]) if config.get("cacert") else True
    return fetch_known(auth.get("auth_url"), verify)


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
