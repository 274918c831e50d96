#!/usr/bin/env python3
"""Write the HAProxy configuration of one site's front door (deploy/haproxy/README.md).

HAProxy terminates TLS and sends every request that carries no scope
straight to the site's service, with the service's prefix stripped as the
gateway strips it; everything else goes to the site's gateway. Sites,
services and backends are read from the gateway's own ``scoped.yaml``
(docs/design.md §8), so the two never disagree:

    python3 deploy/haproxy/haproxy_cfg.py --scoped /etc/scoped/scoped.yaml \\
        --listen 0.0.0.0:443 --gateway 127.0.0.1:18000 \\
        --cert /etc/scoped/berlin.pem --key /etc/scoped/berlin.key \\
        --ca /etc/scoped/federation.pem \\
        --peer Denver=127.0.0.1:18101=denver.example.org:443 \\
        > /etc/haproxy/haproxy.cfg

Standard library and PyYAML only (the gateway's venv has both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

# The names scoped reads, as scoped/carry.py and scoped/urlscope.py spell
# them (kept here as text: this script runs where only the config is).
SCOPE_HEADER = "x-scope"
HOP_HEADER = "x-scoped-hop"
TOKEN_HEADERS = ("x-auth-token", "x-subject-token")
SUFFIX = "!scope!"
URL_PREFIX = "/scope/"

BUFSIZE = 65536
"""tune.bufsize: a request or answer head must fit in one buffer (less
tune.maxrewrite). HAProxy's 16 KiB default refuses what scoped sends and
accepts: a scope is at most 4096 characters, so a scoped URL, X-Scope and
a token suffix carry up to ~5.5 KB each (base64), a paging link up to
8 KB, X-Scope-Sites up to 64 entries; together well past 16 KiB (issue 15:
502 behind stock buffers). 64 KiB is what scoped itself reads of a site's
answer head (scoped/h1.py MAX_HEAD)."""
MAXREWRITE = 1024
"""Room kept in each buffer for the headers HAProxy adds (X-Forwarded-*)."""
CLIENT_KEEPALIVE = 75
"""timeout http-keep-alive on the front: as long as the gateway keeps an
idle client connection (scoped/upstream.py SERVER_KEEPALIVE = 75 s), longer
than the pools of peer gateways (KEEPALIVE = 30 s), so a peer's pool always
closes an idle connection first and never sends a request on one HAProxy is
closing (the race of commit 83a599c)."""
SERVER_TIMEOUT = 90
"""timeout server: past the gateway's default total timeout (60 s), so the
gateway answers a slow site itself (504 naming the site) before HAProxy
cuts the connection with a bare 504."""
CONNECT_TIMEOUT = 3
"""timeout connect: scoped's default connect timeout."""
POOL_PURGE = 4
"""pool-purge-delay (s) for idle connections to servers: under Apache's
5 s KeepAliveTimeout (the lab's Keystone), so HAProxy drops an idle
connection before the server does."""


@dataclass(frozen=True)
class Service:
    name: str
    prefix: str
    host: str
    port: int
    path: str


@dataclass(frozen=True)
class Peer:
    name: str
    listen: str
    target: str
    servername: str | None = None
    """The name its certificate must carry (SNI, verifyhost), when the
    target is an address: HAProxy's host check matches DNS names only."""


def _hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"haproxy_cfg: {what}: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def read_scoped(path: Path, filter_site: bool = False) -> tuple[str, list[str], list[Service]]:
    """This site's name, every site's name, and the services with a backend
    here: entry prefix as the gateway routes it (the path of this site's
    endpoint, else ``/<service>``), backend address and path. At a filter
    site (no gateway, no ``backends``) the services are this site's own
    endpoints: the services that run the filter."""
    doc: Any = yaml.safe_load(path.read_text())
    site = doc["site"]
    sites = list(doc["sites"])
    local = (doc["sites"].get(site) or {}).get("endpoints") or {}
    services = []
    for name, url in sorted((local if filter_site else doc.get("backends") or {}).items()):
        entry = None if filter_site else local.get(name)
        prefix = urlsplit(entry).path.rstrip("/") if entry else ""
        parts = urlsplit(url)
        if parts.scheme != "http":
            where = f"sites.{site}.endpoints" if filter_site else "backends"
            raise SystemExit(f"haproxy_cfg: {path}: {where}.{name}: expected http://, got {url}")
        port = parts.port or 80
        host = parts.hostname or "127.0.0.1"
        services.append(Service(name, prefix or f"/{name}", host, port, parts.path.rstrip("/")))
    return site, sites, services


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _refusal(message: str) -> str:
    """An ``http-request return`` answer in scoped's error shape."""
    body = json.dumps({"error": {"code": 403, "title": "Forbidden", "message": message}})
    return "status 403 content-type application/json string " + _quote(body)


def _quote(text: str) -> str:
    """Strong quotes: HAProxy takes what is inside as it is."""
    if "'" in text:
        raise ValueError(f"no single quote can be written in {text!r}")
    return f"'{text}'"


def _hop_rules(sites: list[str]) -> list[str]:
    """The hop rule of a TLS front (docs/design.md §4), with the gateway's
    answers. The hop mark skips the planning of the gateway or filter
    behind; over TLS scoped honours it only from a peer whose certificate
    names the origin site. HAProxy terminates TLS, so it applies that rule
    itself, and what is behind (on loopback, plain HTTP) trusts what reaches
    it. Defines ``has_hop``."""
    expected = (
        f"the {HOP_HEADER} header (a request forwarded by another site) is honoured only "
        "from a gateway of the federation: expected a client certificate, verified "
        "against the federation CA, whose subject CN is the name of a site "
        f"({', '.join(sites[:8])})"
    )
    return [
        f"    acl has_hop req.hdr_cnt({HOP_HEADER}) gt 0",
        f"    http-request set-var(txn.hop_origin) req.fhdr({HOP_HEADER}),field(1,'>'),"
        "ltrim(' '),rtrim(' ') if has_hop",
        "    http-request set-var(txn.peer) ssl_c_s_dn(CN) if has_hop { ssl_c_used }",
        "    acl peer_cert ssl_c_used ssl_c_verify 0",
        "    acl peer_is_site var(txn.peer) -m str " + " ".join(sites),
        "    acl peer_is_origin var(txn.hop_origin),strcmp(txn.peer) eq 0",
        "    http-request return "
        + _refusal(f"{expected}; this connection presented none")
        + " if has_hop !peer_cert",
        "    http-request return "
        + _refusal(f"{expected}; the certificate of this connection names no site")
        + " if has_hop !peer_is_site",
        "    http-request return "
        + _refusal(
            f"the {HOP_HEADER} header says this request comes from another site than "
            "the one the certificate of this connection names"
        )
        + " if has_hop !peer_is_origin",
    ]


def render(
    *,
    site: str,
    sites: list[str],
    services: list[Service],
    listen: str | None,
    gateway: str | None,
    cert: str,
    ca: str,
    peers: list[Peer],
    service_listen: dict[str, str] | None = None,
    bufsize: int = BUFSIZE,
    stats: str | None = None,
    maxconn: int = 4096,
    log: str | None = None,
) -> str:
    """The whole haproxy.cfg: the front door of a gateway site (``listen``,
    ``gateway``), or of a site whose services run scoped's WSGI filter
    (``service_listen``: a TLS front per service, in front of the service
    itself; no gateway)."""
    filter_site = bool(service_listen)
    out = [
        f"# HAProxy front door of site {site}: written by deploy/haproxy/haproxy_cfg.py",
        *(
            [
                "# (deploy/haproxy/README.md). TLS in front of each service, which runs",
                "# scoped's WSGI filter itself; hops only from the origin site's certificate.",
            ]
            if filter_site
            else [
                "# (deploy/haproxy/README.md). Requests without a scope go straight to",
                "# the site's services; requests with one, and hops from peer gateways,",
                "# to the gateway.",
            ]
        ),
        "global",
        *([f"    log {log} local0"] if log else []),
        f"    maxconn {maxconn}",
        f"    tune.bufsize {bufsize}",
        f"    tune.maxrewrite {MAXREWRITE}",
        "    tune.ssl.default-dh-param 2048",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2",
        "",
        "defaults",
        "    mode http",
        *(["    log global", "    option httplog"] if log else []),
        "    option forwardfor",
        "    http-reuse safe",
        f"    timeout connect {CONNECT_TIMEOUT}s",
        "    timeout http-request 30s",
        f"    timeout http-keep-alive {CLIENT_KEEPALIVE}s",
        f"    timeout client {CLIENT_KEEPALIVE}s",
        f"    timeout server {SERVER_TIMEOUT}s",
        # Connection failures only: an L7 retry (retry-on) keeps a copy of
        # every request to replay, which halved the bypass's req/s here.
        "    retries 2",
        "",
    ]
    bind = f"ssl crt {cert} ca-file {ca} verify optional alpn http/1.1"
    if service_listen:
        out += _filter_fronts(sites, services, service_listen, bind)
    else:
        if listen is None or gateway is None:
            raise SystemExit("haproxy_cfg: a gateway site needs --listen and --gateway")
        out += _gateway_front(sites, services, listen, gateway, bind, maxconn)
    for p in peers:
        host, port = _hostport(p.target, f"--peer {p.name}")
        name = p.servername or host
        out += [
            f"listen egress_{_safe(p.name)}",
            f"    # Calls to {p.name}, over mutual TLS with this site's",
            "    # certificate (what is behind HAProxy may have none of its own).",
            f"    bind {p.listen}",
            "    http-reuse always",
            f"    server {_safe(p.name)} {host}:{port} ssl verify required ca-file {ca} "
            f"crt {cert} sni str({name}) verifyhost {name} alpn http/1.1",
            "",
        ]
    if stats:
        out += ["frontend stats", f"    bind {stats}", "    stats enable", "    stats uri /", ""]
    return "\n".join(out)


def _gateway_front(
    sites: list[str], services: list[Service], listen: str, gateway: str, bind: str, maxconn: int
) -> list[str]:
    """One front: unscoped requests straight to the services, the rest to
    the gateway."""
    gw_host, gw_port = _hostport(gateway, "--gateway")
    out = [
        "frontend site",
        f"    bind {listen} {bind}",
        "    http-request set-header X-Forwarded-Proto https",
        # Everything scoped reads a scope from (docs/design.md §4, §8).
        f"    acl has_scope req.hdr_cnt({SCOPE_HEADER}) gt 0",
        f"    acl scoped_url path_beg {URL_PREFIX}",
        *(f"    acl scoped_token req.hdr({h}) -m sub {SUFFIX}" for h in TOKEN_HEADERS),
        *_hop_rules(sites),
        "    use_backend gateway if has_scope || has_hop || scoped_url || scoped_token",
    ]
    for s in services:
        acl = f"to_{_safe(s.name)}"
        out.append(f"    acl {acl} path {s.prefix}")
        out.append(f"    acl {acl} path_beg {s.prefix}/")
        out.append(f"    use_backend svc_{_safe(s.name)} if {acl}")
    out += [
        "    default_backend gateway",
        "",
        "backend gateway",
        "    # The site's gateway, on loopback (plain HTTP: it trusts a hop mark there).",
        f"    server gateway {gw_host}:{gw_port} maxconn {maxconn}",
        "",
    ]
    for s in services:
        out += [
            f"backend svc_{_safe(s.name)}",
            f"    # {s.name}: {s.prefix}/REST -> {s.path}/REST, as the gateway sends it",
            f"    http-request set-header X-Forwarded-Prefix {s.prefix}",
            f"    http-request replace-path ^{re.escape(s.prefix)}/?(.*)$ {s.path}/\\1",
            f"    server {_safe(s.name)} {s.host}:{s.port} pool-purge-delay {POOL_PURGE}s",
            "",
        ]
    return out


def _filter_fronts(
    sites: list[str], services: list[Service], service_listen: dict[str, str], bind: str
) -> list[str]:
    """A front per service of a filter site: every request goes to the
    service (its filter reads the scope), a hop only from its origin."""
    by_name = {s.name: s for s in services}
    unknown = sorted(set(service_listen) - set(by_name))
    if unknown:
        raise SystemExit(
            f"haproxy_cfg: --service {unknown[0]}: no endpoint of this site in scoped.yaml "
            f"for it (expected one of: {', '.join(sorted(by_name)) or 'none'})"
        )
    out: list[str] = []
    for name, where in service_listen.items():
        s = by_name[name]
        front = _safe(name)
        out += [
            f"frontend front_{front}",
            f"    # {name}: TLS in front of the service and its WSGI filter",
            f"    bind {where} {bind}",
            "    http-request set-header X-Forwarded-Proto https",
            *_hop_rules(sites),
            f"    default_backend svc_{front}",
            "",
            f"backend svc_{front}",
            f"    server {front} {s.host}:{s.port} pool-purge-delay {POOL_PURGE}s",
            "",
        ]
    return out


def combined_pem(cert: Path, key: Path | None, folder: Path) -> str:
    """A PEM with the certificate and its key, as HAProxy's ``crt`` reads
    it: the cert itself when the key is in it or beside it as ``CERT.key``
    (HAProxy loads that by itself), else one written (mode 0600) in ``folder``."""
    if key is None or key == Path(f"{cert}.key"):
        return str(cert)
    out = folder / f"{cert.stem}-with-key.pem"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(cert.read_text().rstrip("\n") + "\n" + key.read_text())
    return str(out)


def _peer(value: str) -> Peer:
    name, sep, rest = value.partition("=")
    listen, sep2, target = rest.partition("=")
    target, _, servername = target.partition("=")
    if not (sep and sep2 and name):
        raise argparse.ArgumentTypeError(f"expected NAME=LISTEN=TARGET[=NAME], got {value!r}")
    return Peer(name, listen, target, servername or None)


def _service(value: str) -> tuple[str, str]:
    name, sep, listen = value.partition("=")
    if not (sep and name and listen):
        raise argparse.ArgumentTypeError(f"expected TYPE=ADDR:PORT, got {value!r}")
    return name, listen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--scoped", type=Path, required=True, help="the site gateway's scoped.yaml")
    ap.add_argument("--listen", help="where HAProxy serves HTTPS (ADDR:PORT), a gateway site")
    ap.add_argument("--gateway", help="the gateway's listen address (HOST:PORT)")
    ap.add_argument(
        "--service",
        type=_service,
        action="append",
        default=[],
        help="TYPE=ADDR:PORT: at a site whose services run scoped's WSGI filter (no "
        "gateway), a TLS front on ADDR:PORT for its service TYPE (its endpoint in "
        "scoped.yaml); repeat per service. Instead of --listen and --gateway",
    )
    ap.add_argument("--cert", type=Path, required=True, help="this site's certificate (PEM)")
    ap.add_argument("--key", type=Path, help="its key, if not in --cert")
    ap.add_argument("--ca", type=Path, required=True, help="the federation's CA bundle")
    ap.add_argument(
        "--peer",
        type=_peer,
        action="append",
        default=[],
        help="NAME=LISTEN=HOST:PORT[=SERVERNAME]: an egress listener on LISTEN (loopback) "
        "for the gateway's calls to site NAME at HOST:PORT, over mutual TLS; its "
        "certificate must name SERVERNAME (default HOST; a DNS name: HAProxy does not "
        "check addresses)",
    )
    ap.add_argument("--bufsize", type=int, default=BUFSIZE, help="tune.bufsize (bytes)")
    ap.add_argument("--log", help="syslog target, e.g. /dev/log (none by default)")
    ap.add_argument("--stats", help="ADDR:PORT of an HTTP stats page (none by default)")
    ap.add_argument("--out", type=Path, help="write here (and the combined PEM beside it)")
    args = ap.parse_args(argv)
    if args.service and (args.listen or args.gateway):
        ap.error("--service (a filter site) goes without --listen and --gateway")
    if not args.service and not (args.listen and args.gateway):
        ap.error("expected --listen and --gateway (a gateway site), or --service (a filter site)")
    site, sites, services = read_scoped(args.scoped, filter_site=bool(args.service))
    folder = args.out.parent if args.out else Path.cwd()
    text = render(
        site=site,
        sites=sites,
        services=services,
        listen=args.listen,
        gateway=args.gateway,
        cert=combined_pem(args.cert, args.key, folder),
        ca=str(args.ca),
        peers=args.peer,
        service_listen=dict(args.service) or None,
        bufsize=args.bufsize,
        stats=args.stats,
        log=args.log,
    )
    if args.out:
        args.out.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
