"""Keystone at each site: the gateway's service tokens and catalog discovery
(docs/design.md §4, §5), with keystoneauth1.

keystoneauth1 is synchronous (requests): its calls run in a worker thread so
the event loop never waits on a Keystone. A session per site, built from that
site's ``auth:``; keystoneauth caches the token and renews it before expiry.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from .config import Config, SiteAuth, TlsSettings
from .errors import ScopedError

log = logging.getLogger("scoped.identity")

# "/v2.1", "/v2.1/%(tenant_id)s", "/v3", "/v2.0", "/v1/AUTH_$(project_id)s"...
_VERSION_TAIL = re.compile(r"/v\d+(\.\d+)?(/(%|\$)?\(?[a-z_]+\)?s?|/[0-9a-fA-F]{32}|/AUTH_.*)?/?$")


class IdentityError(ScopedError):
    """A site's Keystone could not be reached or refused the gateway's credentials."""


def unversioned(url: str) -> str:
    """A catalog endpoint without its version and project parts: the service root.

    Requests carry their own version in the path (``/v2.1/servers``), so
    endpoints are kept unversioned, as docs/design.md §8 writes them.
    """
    return _VERSION_TAIL.sub("", url.rstrip("/"))


class SiteIdentity:
    """The gateway's credentials at one site."""

    def __init__(
        self, site: str, auth: SiteAuth, timeout: float, tls: TlsSettings | None = None
    ) -> None:
        self.site = site
        self.region = auth.region_name or site
        self.plugin = v3.Password(
            auth_url=auth.auth_url,
            username=auth.username,
            password=auth.password,
            project_name=auth.project_name,
            user_domain_name=auth.user_domain_name,
            project_domain_name=auth.project_domain_name,
        )
        options = (tls or TlsSettings()).session_options()
        self.session = ks_session.Session(auth=self.plugin, timeout=timeout, **options)
        self.last_token: str | None = None

    def token(self) -> str:
        try:
            token: str | None = self.session.get_token()
        except ks_exceptions.ClientException as err:
            raise IdentityError(f"cannot get a service token at {self.site}: {err}") from None
        if token is None:
            raise IdentityError(f"{self.site}'s Keystone gave no token")
        return token

    def invalidate(self) -> None:
        self.plugin.invalidate()

    def catalog(self) -> dict[str, str]:
        """Public endpoints of this site's region, by service type, unversioned."""
        try:
            access = self.plugin.get_access(self.session)
        except ks_exceptions.ClientException as err:
            raise IdentityError(f"cannot read {self.site}'s catalog: {err}") from None
        found: dict[str, str] = {}
        endpoints = access.service_catalog.get_endpoints(
            interface="public", region_name=self.region
        )
        for service_type, entries in endpoints.items():
            for entry in entries:
                url = entry.get("url") if entry else None
                if url:
                    found.setdefault(service_type, unversioned(url))
        return found


class Identities:
    """Every site's credentials; what the executor and the registry ask of Keystone."""

    def __init__(self, config: Config, on_renewal: Callable[[str], None] | None = None) -> None:
        self._sites = {
            name: SiteIdentity(name, site.auth, site.timeouts.total, config.tls)
            for name, site in config.sites.items()
            if site.auth is not None
        }
        self._on_renewal = on_renewal

    def has(self, site: str) -> bool:
        return site in self._sites

    def sites(self) -> list[str]:
        return list(self._sites)

    async def service_token(self, site: str) -> str:
        """This gateway's token at ``site`` (cached by keystoneauth, renewed before expiry)."""
        ident = self._sites[site]
        token = await asyncio.to_thread(ident.token)
        if token != ident.last_token:
            if ident.last_token is not None and self._on_renewal is not None:
                self._on_renewal(site)
            ident.last_token = token
        return token

    def invalidate(self, site: str) -> None:
        """Forget the token (after a 401): the next call authenticates again."""
        if site in self._sites:
            self._sites[site].invalidate()

    async def catalog(self, site: str) -> Mapping[str, str]:
        return await asyncio.to_thread(self._sites[site].catalog)
