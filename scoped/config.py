"""The gateway's YAML configuration (docs/design.md §8), validated at start.

Every error names the file and the key at fault (``sites.Paris.endpoints``)
and says what was expected, so an operator can fix it without reading code.
Service keys accept anything the scope language accepts (``nova``,
``volumev3``) and are stored as official service types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from scoped_grammar.errors import nearest
from scoped_grammar.services import known_service_names, official_service_type

from .circuit import CircuitSettings
from .errors import ConfigError

DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_TOTAL_TIMEOUT = 60.0


@dataclass(frozen=True)
class Timeouts:
    """Per-site timeouts, in seconds: to connect, and for the whole call."""

    connect: float = DEFAULT_CONNECT_TIMEOUT
    total: float = DEFAULT_TOTAL_TIMEOUT


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one request from taking the gateway down (docs/design.md §6)."""

    max_fanout: int = 256
    """Most sites one request may be sent to."""
    max_concurrency: int = 1024
    """Most upstream calls at once, over all requests, between sending a
    request and the head of its answer; an answer's body streaming to a
    client is not counted (its pace is the client's, bounded by the total
    timeout). A call that waits longer than its connect timeout for a place
    fails (``error``: too many upstream calls in flight)."""
    max_merge_bytes: int = 16 * 1024 * 1024
    """Largest body read from one site to be merged."""
    max_replay_bytes: int = 4 * 1024 * 1024
    """Largest request body held in memory (so it can fail over, and so an
    ``&`` create's JSON can be prepared per site); larger bodies stream: to
    one site through a ``|``, to every site at once through an ``&``."""


@dataclass(frozen=True)
class Retries:
    """Retries of idempotent requests after connect-level failures (tenacity)."""

    attempts: int = 2
    """Tries in all, the first included (1: no retry)."""
    backoff: float = 0.05
    """Base of the jittered exponential wait between tries, in seconds."""


@dataclass(frozen=True)
class SiteAuth:
    """Credentials at one site: catalog discovery and its service token."""

    auth_url: str
    username: str
    password: str
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region_name: str | None = None


@dataclass(frozen=True)
class SiteTokens:
    """How a user's token is made good at a site (docs/design.md §4).

    ``origin`` (the default): the site's services get the user's token and
    validate it at the Keystone that issued it, through the gateways; for
    federations whose Keystones agree on IDs. ``federated``: the site gets a
    token of its own Keystone for the user, obtained by Keystone-to-Keystone
    federation from the issuing Keystone (this site's), scoped to
    ``project_name`` there: by default the project of the user's own token,
    by name, as a federation that keeps one project per tenant at every site
    names it (its ID differs per site)."""

    mode: str = "origin"
    service_provider: str | None = None
    """The site's service provider ID at this site's Keystone (default: its name)."""
    project_name: str | None = None
    """The project there (default: the name of the user's project here)."""
    project_domain_name: str | None = None
    """Its domain (default: ``Default`` with ``project_name``, else the
    domain of the user's project here)."""

    @property
    def federated(self) -> bool:
        return self.mode == "federated"


@dataclass(frozen=True)
class SiteConfig:
    name: str
    endpoints: Mapping[str, str] = field(default_factory=dict)
    auth: SiteAuth | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    tokens: SiteTokens = field(default_factory=SiteTokens)


@dataclass(frozen=True)
class PagingSettings:
    """Where composite markers too long for a link are kept (scoped/markers.py).

    ``memcached``: ``HOST:PORT`` of the memcached servers every gateway
    process and replica of the site shares (none: markers stay inline in
    the links, however long); ``ttl``: how long a kept marker lasts, so how
    long a paging link stays good (seconds)."""

    memcached: tuple[str, ...] = ()
    ttl: int = 86400


@dataclass(frozen=True)
class TlsSettings:
    """TLS where a request crosses a site boundary (the front door issue).

    ``cert``/``key``: this gateway's certificate (PEM) and its private key,
    both or neither. Given, the gateway serves HTTPS (``scoped gateway``
    under uvicorn) and presents the same certificate as its client
    certificate to ``https://`` sites (mutual TLS), and it honours the hop
    header only from a peer whose verified certificate names a site of the
    registry (docs/design.md §4). ``ca``: the federation's CA bundle; it
    alone verifies ``https://`` sites (not the system's CAs: only the
    federation is trusted) and the client certificates of peers. Required
    with ``cert``: a gateway that could verify no peer could never take a
    forwarded request. ``require_client_cert``: every connection must
    present a certificate of the federation CA (a listener for gateways
    only); by default a certificate is asked for but optional, so users'
    clients without one still connect, as plain clients. ``serve: false``:
    the certificate is only this gateway's client certificate; it serves
    plain HTTP, on loopback, behind a front door that terminates TLS and
    applies the hop rule itself (deploy/haproxy). Paths are read as given
    (relative ones from the working directory), at start, and again on
    SIGHUP (``scoped gateway``: a renewed certificate without a restart;
    the other keys take one)."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    require_client_cert: bool = False
    serve: bool = True

    @property
    def serving(self) -> bool:
        """Whether this gateway serves HTTPS (and so checks who sends a hop)."""
        return self.cert is not None and self.serve

    def session_options(self) -> dict[str, Any]:
        """keystoneauth1 ``Session`` options: an ``https://`` Keystone is
        verified as every site is (against ``tls.ca``) and gets this
        gateway's certificate."""
        pair = (self.cert, self.key) if self.cert is not None and self.key is not None else None
        return {"verify": self.ca if self.ca is not None else True, "cert": pair}


@dataclass(frozen=True)
class Config:
    site: str
    sites: Mapping[str, SiteConfig]
    backends: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    circuit: CircuitSettings = field(default_factory=CircuitSettings)
    retries: Retries = field(default_factory=Retries)
    catalog_refresh: float = 300.0
    """Seconds between refreshes of the catalogs of sites given with ``auth:``."""
    source: str = "<config>"
    tls: TlsSettings = field(default_factory=TlsSettings)
    paging: PagingSettings = field(default_factory=PagingSettings)

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(self.sites)

    @property
    def local(self) -> SiteConfig:
        return self.sites[self.site]


_TOP_KEYS = (
    "site",
    "sites",
    "backends",
    "timeouts",
    "limits",
    "circuit",
    "retries",
    "catalog",
    "tls",
    "paging",
)
_SITE_KEYS = ("endpoints", "auth", "timeouts", "tokens")
_TOKEN_KEYS = ("mode", "service_provider", "project_name", "project_domain_name")
TOKEN_MODES = ("origin", "federated")
_AUTH_KEYS = (
    "auth_url",
    "username",
    "password",
    "project_name",
    "user_domain_name",
    "project_domain_name",
    "region_name",
)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raises :class:`ConfigError` naming the key."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{source}: cannot read the config file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    return parse_config(data, source)


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-loaded YAML data (a mapping) into a :class:`Config`."""
    at = _Where(source)
    top = at.mapping(data, "", "a mapping with 'site' and 'sites'")
    at.only(top, "", _TOP_KEYS)
    site = at.string(top.get("site"), "site", "the name of the site this process serves")
    default_timeouts = _timeouts(at, top.get("timeouts"), "timeouts", Timeouts())
    sites_data = at.mapping(top.get("sites"), "sites", "a mapping of site name to settings")
    if not sites_data:
        raise at.error("sites", "at least one site")
    sites: dict[str, SiteConfig] = {}
    for name, raw in sites_data.items():
        key = f"sites.{name}"
        if not isinstance(name, str) or not name:
            raise at.error("sites", f"site names as text, got {name!r}")
        body = at.mapping(raw if raw is not None else {}, key, "a mapping")
        at.only(body, key, _SITE_KEYS)
        endpoints = _urls(at, body.get("endpoints"), f"{key}.endpoints")
        auth = _auth(at, body.get("auth"), f"{key}.auth")
        timeouts = _timeouts(at, body.get("timeouts"), f"{key}.timeouts", default_timeouts)
        if not endpoints and auth is None and name != site:
            raise at.error(key, "'endpoints' or 'auth' (how to reach this site)")
        tokens = _tokens(at, body.get("tokens"), f"{key}.tokens")
        sites[name] = SiteConfig(name, endpoints, auth, timeouts, tokens)
    if site not in sites:
        hint = nearest(site, sites)
        also = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise at.error("site", f"one of the names under 'sites'{also}, got {site!r}")
    backends = _urls(at, top.get("backends"), "backends")
    limits = _limits(at, top.get("limits"))
    circuit = _numbers(at, top.get("circuit"), "circuit", CircuitSettings)
    retries = _numbers(at, top.get("retries"), "retries", Retries)
    catalog = at.mapping(top.get("catalog") or {}, "catalog", "a mapping with 'refresh'")
    at.only(catalog, "catalog", ("refresh",))
    refresh = at.number(catalog.get("refresh", 300.0), "catalog.refresh", 1.0)
    if retries.attempts < 1:
        raise at.error("retries.attempts", "at least 1 (1: no retry)", retries.attempts)
    tls = _tls(at, top.get("tls"))
    paging = _paging(at, top.get("paging"))
    return Config(site, sites, backends, limits, circuit, retries, refresh, source, tls, paging)


class _Where:
    """Builds errors that name the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, expected: str, got: Any = ...) -> ConfigError:
        where = f"{self.source}: {key}" if key else self.source
        tail = "" if got is ... else f", got {got!r}"
        return ConfigError(f"{where}: expected {expected}{tail}")

    def mapping(self, value: Any, key: str, expected: str) -> dict[Any, Any]:
        if value is None:
            raise self.error(key or "(top level)", expected)
        if not isinstance(value, dict):
            raise self.error(key or "(top level)", expected, value)
        return value

    def string(self, value: Any, key: str, expected: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(key, expected, value if value is not None else ...)
        return value

    def number(self, value: Any, key: str, minimum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise self.error(key, f"a number >= {minimum}", value)
        return float(value)

    def only(self, data: dict[Any, Any], key: str, allowed: tuple[str, ...]) -> None:
        for k in data:
            if k not in allowed:
                hint = nearest(str(k), allowed)
                also = f"; did you mean {hint[0]!r}?" if hint else ""
                where = f"{key}.{k}" if key else str(k)
                raise ConfigError(
                    f"{self.source}: {where}: unknown key (allowed: {', '.join(allowed)}){also}"
                )


def _urls(at: _Where, value: Any, key: str) -> dict[str, str]:
    if value is None:
        return {}
    data = at.mapping(value, key, "a mapping of service type to URL")
    out: dict[str, str] = {}
    for service, url in data.items():
        official = official_service_type(str(service))
        if official is None:
            hint = nearest(str(service), known_service_names())
            also = f" (did you mean {', '.join(map(repr, hint))}?)" if hint else ""
            raise at.error(f"{key}.{service}", f"a known service type{also}", service)
        if official in out:
            raise at.error(f"{key}.{service}", f"each service once; {official!r} is given twice")
        out[official] = _url(at, url, f"{key}.{service}")
    return out


def _url(at: _Where, value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise at.error(key, "a URL such as http://127.0.0.1:8001/compute", value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise at.error(key, "an http:// or https:// URL with a host", value)
    if parts.query or parts.fragment:
        raise at.error(key, "a URL without query or fragment", value)
    return value.rstrip("/")


def _auth(at: _Where, value: Any, key: str) -> SiteAuth | None:
    if value is None:
        return None
    data = at.mapping(value, key, "a mapping of keystoneauth1 password options")
    at.only(data, key, _AUTH_KEYS)
    required = ("auth_url", "username", "password", "project_name")
    for name in required:
        at.string(data.get(name), f"{key}.{name}", "a non-empty string")
    for name in _AUTH_KEYS:
        if name in data and not isinstance(data[name], str):
            raise at.error(f"{key}.{name}", "a string", data[name])
    _url(at, data["auth_url"], f"{key}.auth_url")
    return SiteAuth(**{k: data[k] for k in _AUTH_KEYS if k in data})


def _tokens(at: _Where, value: Any, key: str) -> SiteTokens:
    if value is None:
        return SiteTokens()
    data = at.mapping(value, key, "a mapping with 'mode' (origin or federated)")
    at.only(data, key, _TOKEN_KEYS)
    for name in _TOKEN_KEYS:
        if name in data:
            at.string(data[name], f"{key}.{name}", "a non-empty string")
    mode = data.get("mode", "origin")
    if mode not in TOKEN_MODES:
        raise at.error(f"{key}.mode", " or ".join(TOKEN_MODES), mode)
    if "project_domain_name" in data and "project_name" not in data:
        raise at.error(
            f"{key}.project_name",
            "a project name with project_domain_name (or neither: the user's own project)",
        )
    return SiteTokens(**{k: data[k] for k in _TOKEN_KEYS if k in data})


def _timeouts(at: _Where, value: Any, key: str, default: Timeouts) -> Timeouts:
    if value is None:
        return default
    data = at.mapping(value, key, "a mapping with 'connect' and/or 'total' seconds")
    at.only(data, key, ("connect", "total"))
    connect = default.connect
    total = default.total
    if "connect" in data:
        connect = at.number(data["connect"], f"{key}.connect", 0.001)
    if "total" in data:
        total = at.number(data["total"], f"{key}.total", 0.001)
    return Timeouts(connect, total)


_T = TypeVar("_T", CircuitSettings, Retries)


def _numbers(at: _Where, value: Any, key: str, kind: type[_T]) -> _T:
    """A small dataclass of numbers (ints stay ints) from a mapping."""
    if value is None:
        return kind()
    data = at.mapping(value, key, "a mapping of numbers")
    fields = kind.__dataclass_fields__
    at.only(data, key, tuple(fields))
    values: dict[str, Any] = {}
    for name, raw in data.items():
        number = at.number(raw, f"{key}.{name}", 0.0)
        values[name] = int(number) if fields[name].type == "int" else number
    return kind(**values)


def _limits(at: _Where, value: Any) -> Limits:
    if value is None:
        return Limits()
    data = at.mapping(value, "limits", "a mapping of bounds")
    names = tuple(Limits.__dataclass_fields__)
    at.only(data, "limits", names)
    values = {n: int(at.number(data[n], f"limits.{n}", 1)) for n in names if n in data}
    return Limits(**values)


# -- paging: where long composite markers are kept (docs/design.md §5, §8) --


def _paging(at: _Where, value: Any) -> PagingSettings:
    if value is None:
        return PagingSettings()
    data = at.mapping(value, "paging", "a mapping with 'memcached' and 'ttl'")
    at.only(data, "paging", ("memcached", "ttl"))
    servers = data.get("memcached", [])
    if isinstance(servers, str):
        servers = [servers]
    expected = "HOST:PORT of a memcached server, or a list of them"
    if not isinstance(servers, list):
        raise at.error("paging.memcached", expected, servers)
    for server in servers:
        host, sep, port = str(server).rpartition(":")
        if not isinstance(server, str) or not sep or not host or not port.isdigit():
            raise at.error("paging.memcached", expected, server)
        if not 0 < int(port) < 65536:
            raise at.error("paging.memcached", "a port from 1 to 65535", server)
    ttl = at.number(data.get("ttl", 86400), "paging.ttl", 1)
    return PagingSettings(tuple(servers), int(ttl))


# -- tls: the gateway's certificate and the federation's CA (docs/design.md §8) --

_TLS_KEYS = ("cert", "key", "ca", "require_client_cert", "serve")


def _tls(at: _Where, value: Any) -> TlsSettings:
    if value is None:
        return TlsSettings()
    data = at.mapping(value, "tls", "a mapping with 'cert', 'key', 'ca' (PEM file paths)")
    at.only(data, "tls", _TLS_KEYS)
    paths: dict[str, str] = {}
    for name in ("cert", "key", "ca"):
        if name in data:
            paths[name] = at.string(data[name], f"tls.{name}", "the path of a PEM file")
    require = data.get("require_client_cert", False)
    if not isinstance(require, bool):
        raise at.error("tls.require_client_cert", "true or false", require)
    if ("cert" in paths) != ("key" in paths):
        given, missing = ("cert", "key") if "cert" in paths else ("key", "cert")
        raise at.error(
            f"tls.{missing}", f"the {missing} file too: tls.{given} and tls.{missing} go together"
        )
    if "cert" in paths and "ca" not in paths:
        raise at.error(
            "tls.ca",
            "the federation's CA bundle (a gateway serving HTTPS honours a forwarded "
            "request only from a peer whose certificate it verifies against it)",
        )
    serve = data.get("serve", True)
    if not isinstance(serve, bool):
        raise at.error("tls.serve", "true or false", serve)
    if require and ("cert" not in paths or not serve):
        raise at.error(
            "tls.require_client_cert",
            "tls.cert and tls.key too, served (client certificates are asked for only over HTTPS)",
            require,
        )
    return TlsSettings(**paths, require_client_cert=require, serve=serve)
