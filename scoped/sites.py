"""The site registry: which sites exist, in what order, and where each
service of each site is reached.

A request URL at this gateway is mapped to (service type, path) by the
longest matching entry prefix, and re-based onto the target: this site's
backend, or another site's entry URL for that service (docs/design.md §5, §8).
No URL, host or port ever comes from a request: only from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from .config import Config, Timeouts


class Registry:
    """Sites in preference order, their endpoints, and this site's backends."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.local = config.site
        self.names: tuple[str, ...] = config.site_names
        self.backends: Mapping[str, str] = dict(config.backends)
        # Endpoints per site; catalog discovery may add to these later, but
        # endpoints given in the config always win.
        self._endpoints: dict[str, dict[str, str]] = {
            name: dict(site.endpoints) for name, site in config.sites.items()
        }
        self._public: dict[str, dict[str, str]] = {}
        """Per site, the public URL its catalog gives a configured service
        when it is not the address configured here (a site reached over a
        private link, a proxy, the lab's WAN emulator): the site writes its
        links with it."""
        self._routes = self._build_routes()

    @property
    def _routes(self) -> list[tuple[str, str]]:
        return self.__routes

    @_routes.setter
    def _routes(self, routes: list[tuple[str, str]]) -> None:
        self.__routes = routes
        # Longest prefix wins, so a one-segment head is only taken as a
        # shortcut when no longer prefix starts with it.
        longer = {p.split("/")[1] for p, _ in routes if p.count("/") > 1}
        self._heads = {p: s for p, s in routes if p.count("/") == 1 and p[1:] not in longer}

    def timeouts(self, name: str) -> Timeouts:
        return self.config.sites[name].timeouts

    def endpoint(self, site: str, service: str) -> str | None:
        """Where ``service`` of ``site`` is reached from here, or None."""
        if site == self.local:
            return self.backends.get(service)
        endpoints = self._endpoints.get(site)
        return None if endpoints is None else endpoints.get(service)

    def learn(self, site: str, endpoints: Mapping[str, str]) -> None:
        """Add endpoints discovered from a site's catalog; configured ones win."""
        known = self._endpoints.setdefault(site, {})
        configured = self.config.sites[site].endpoints
        public = self._public.setdefault(site, {})
        for service, url in endpoints.items():
            if service not in configured:
                known[service] = url.rstrip("/")
            elif url.rstrip("/") != configured[service].rstrip("/"):
                public[service] = url.rstrip("/")
            else:
                public.pop(service, None)
        self._routes = self._build_routes()

    def public_endpoint(self, site: str, service: str) -> str | None:
        """``site``'s own public URL for ``service`` (from its catalog) when it
        differs from where this gateway reaches it, else None: links the
        site writes with it are rewritten like links to its endpoint."""
        if site == self.local:
            return None
        public = self._public.get(site)  # (no empty dict made per call)
        return None if public is None else public.get(service)

    def probe_url(self, site: str) -> str | None:
        """A URL of ``site`` to probe for health: an HTTP answer (other
        than 502/503/504) means it is up."""
        if site == self.local:
            urls = list(self.backends.values())
        else:
            urls = list(self._endpoints.get(site, {}).values())
        return urls[0] if urls else None

    def route(self, path: str) -> tuple[str, str, str] | None:
        """``(service, prefix, rest)`` for a request path at this gateway, or None.

        ``/compute/v2.1/servers`` -> ``("compute", "/compute", "/v2.1/servers")``.
        """
        # Fast path: a one-segment prefix (/compute) is a dictionary lookup.
        cut = path.find("/", 1)
        head = path if cut < 0 else path[:cut]
        service = self._heads.get(head)
        if service is not None:
            return service, head, path[len(head) :] or "/"
        for prefix, service in self._routes:
            if path == prefix or path.startswith(prefix + "/"):
                return service, prefix, path[len(prefix) :] or "/"
        return None

    def prefixes(self) -> dict[str, str]:
        """Entry path prefix of each service at this gateway."""
        return {service: prefix for prefix, service in self._routes}

    def _build_routes(self) -> list[tuple[str, str]]:
        local = self.config.local.endpoints
        services = set(self.backends) | set(local)
        for endpoints in self._endpoints.values():
            services.update(endpoints)
        routes: dict[str, str] = {}
        for service in sorted(services):
            url = local.get(service)
            prefix = urlsplit(url).path.rstrip("/") if url else ""
            routes[prefix or f"/{service}"] = service
        # Longest prefix first, so /image/v2 would win over /image.
        return sorted(routes.items(), key=lambda r: len(r[0]), reverse=True)
