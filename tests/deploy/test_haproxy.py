"""HAProxy in front of a site (issue 17.3, deploy/haproxy/): a real haproxy,
configured by ``deploy/haproxy/haproxy_cfg.py``, terminates TLS for Berlin
and sends a request without a scope straight to the site's service (the
gateway never sees it) and every other one to Berlin's gateway. Both answer
as they do without HAProxy.

Berlin's and Denver's services are the stand-ins of :mod:`tests.standin`;
Berlin's gateway is the real ASGI app under uvicorn, on loopback and plain
HTTP behind HAProxy, its calls to Denver made through HAProxy's egress
listener, which presents Berlin's certificate to Denver's gateway (HTTPS,
mutual TLS, as ``scoped gateway`` serves it).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from scoped_cli.serve import uvicorn_tls
from scoped_middleware.asgi import create_app

from scoped.carry import encode_scope
from scoped.config import TlsSettings, parse_config
from scoped.upstream import KEEPALIVE, SERVER_KEEPALIVE
from tests.debian import require_binary
from tests.federation import free_port
from tests.pki import Authority, Issued
from tests.standin import LoopThread, SiteData, make_items, serve_sites

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "deploy" / "haproxy" / "haproxy_cfg.py"
HAPROXY = "/usr/sbin/haproxy"
SERVICES = ("compute", "image", "identity", "network", "placement")
DENVER = "<compute: Denver>"


def _haproxy() -> str:
    """The haproxy binary (tests/debian.py: installed on CI if missing)."""
    return require_binary(HAPROXY, "haproxy", "these tests run a real haproxy")


class Recorder:
    """Berlin's gateway app, keeping every HTTP request it saw."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


_TASKS: list[asyncio.Task[None]] = []


async def _serve(app: Any, port: int, **options: Any) -> uvicorn.Server:
    """As ``scoped gateway`` runs uvicorn (no proxy headers, 75 s keep-alive)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_keep_alive=SERVER_KEEPALIVE,
        **options,
    )
    server = uvicorn.Server(config)
    _TASKS.append(asyncio.ensure_future(server.serve()))
    for _ in range(500):
        if server.started:
            return server
        await asyncio.sleep(0.01)
    raise RuntimeError(f"nothing started on port {port}")


@dataclass
class HaProxy:
    proc: subprocess.Popen[bytes]
    url: str
    config: str

    def stop(self) -> None:
        self.proc.terminate()  # our own child, by its PID
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_haproxy(
    binary: str,
    folder: Path,
    scoped_yaml: Path,
    gateway: str | None,
    cert: Issued,
    ca: str,
    services: tuple[str, ...] = (),
    **more: str,
) -> HaProxy:
    """Write the site's config with the generator, start haproxy in the
    foreground and wait until it serves TLS: the front door of a gateway
    site (``gateway``), or of a filter site (``services``: a front for each,
    the first one's URL returned)."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "haproxy.cfg"
    args = [sys.executable, str(GENERATOR), "--scoped", str(scoped_yaml)]
    if gateway is not None:
        args += ["--listen", f"127.0.0.1:{port}", "--gateway", gateway]
    for i, service in enumerate(services):
        args += ["--service", f"{service}=127.0.0.1:{port if i == 0 else free_port()}"]
    args += ["--cert", cert.cert, "--key", cert.key, "--ca", ca, "--out", str(cfg)]
    for key, value in more.items():
        args += [f"--{key}", value]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    checked = subprocess.run(
        [binary, "-c", "-q", "-f", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(
        [binary, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"haproxy exited ({proc.returncode}): {err}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return HaProxy(proc, f"https://127.0.0.1:{port}", cfg.read_text())
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise AssertionError(f"haproxy did not listen on {port}")


@dataclass
class Site:
    haproxy: str
    front: str
    gateway: str
    ca: Authority
    certs: dict[str, Issued]
    recorder: Recorder
    berlin: SiteData
    denver: SiteData
    scoped_yaml: Path
    folder: Path
    started: list[HaProxy] = field(default_factory=list)
    berlin_url: str = ""

    def client(self, cert: str | None = None) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=self.ca.bundle)
        if cert is not None:
            ctx.load_cert_chain(self.certs[cert].cert, self.certs[cert].key)
        return httpx.Client(verify=ctx, timeout=20)

    def reset(self) -> None:
        self.recorder.seen.clear()
        self.berlin.received.clear()
        self.denver.received.clear()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    binary = _haproxy()
    folder = tmp_path_factory.mktemp("haproxy")
    ca = Authority(folder / "pki")
    certs = {n: ca.issue(n) for n in ("Berlin", "Denver", "Mallory")}
    front_port, gw_port, egress_port, denver_port = (free_port() for _ in range(4))
    front = f"https://127.0.0.1:{front_port}"
    gateway = f"http://127.0.0.1:{gw_port}"
    # Links as the lab writes them (nova's compute_link_prefix, keystone's and
    # glance's public_endpoint): at the site's front door, so neither path
    # rewrites them and answers compare byte for byte.
    berlin = SiteData("Berlin", servers=make_items("vm", 3, seed="Berlin"), public_url=front)
    berlin.images = make_items("img", 3, seed="Berlin")
    berlin.networks = make_items("net", 3, seed="Berlin")
    berlin.users = make_items("user", 3, seed="Berlin")
    denver = SiteData("Denver", servers=make_items("vm", 2, seed="Denver"), public_url=front)
    servers: list[uvicorn.Server] = []
    with LoopThread() as worker:
        sites_cm = serve_sites([berlin, denver])
        urls = worker.call(sites_cm.__aenter__())
        try:
            denver_tls = TlsSettings(certs["Denver"].cert, certs["Denver"].key, ca.bundle)
            denver_cfg = {
                "site": "Denver",
                "sites": {
                    "Berlin": {"endpoints": {s: f"{front}/{s}" for s in SERVICES}},
                    "Denver": {
                        "endpoints": {s: f"https://localhost:{denver_port}/{s}" for s in SERVICES}
                    },
                },
                "backends": {s: urls["Denver"] for s in SERVICES},
                "tls": {"cert": denver_tls.cert, "key": denver_tls.key, "ca": ca.bundle},
            }
            denver_app = create_app(parse_config(denver_cfg, "<Denver>"))
            servers.append(worker.call(_serve(denver_app, denver_port, **uvicorn_tls(denver_tls))))
            berlin_cfg = {
                "site": "Berlin",
                "sites": {
                    "Berlin": {"endpoints": {s: f"{front}/{s}" for s in SERVICES}},
                    # Through HAProxy's egress listener (mutual TLS as Berlin).
                    "Denver": {
                        "endpoints": {s: f"http://127.0.0.1:{egress_port}/{s}" for s in SERVICES}
                    },
                },
                "backends": {s: urls["Berlin"] for s in SERVICES},
            }
            scoped_yaml = folder / "scoped.yaml"
            scoped_yaml.write_text(yaml.safe_dump(berlin_cfg))
            recorder = Recorder(create_app(parse_config(berlin_cfg, str(scoped_yaml))))
            servers.append(worker.call(_serve(recorder, gw_port)))
            proxy = start_haproxy(
                binary,
                folder / "front",
                scoped_yaml,
                f"127.0.0.1:{gw_port}",
                certs["Berlin"],
                ca.bundle,
                peer=f"Denver=127.0.0.1:{egress_port}=localhost:{denver_port}",
            )
            found = Site(
                binary,
                proxy.url,
                gateway,
                ca,
                certs,
                recorder,
                berlin,
                denver,
                scoped_yaml,
                folder,
                [proxy],
                urls["Berlin"],
            )
            try:
                yield found
            finally:
                for started in found.started:
                    started.stop()
        finally:
            for server in servers:
                server.should_exit = True
            worker.call(asyncio.sleep(0.5))
            worker.call(sites_cm.__aexit__(None, None, None))


def _body(resp: httpx.Response) -> Any:
    """The answer's body; a token's times (issued now) left out."""
    if not resp.headers.get("content-type", "").startswith("application/json"):
        return resp.content
    data = resp.json()
    if isinstance(data, dict) and isinstance(data.get("token"), dict):
        for key in ("issued_at", "expires_at"):
            data["token"].pop(key, None)
    return data


def _same(via: httpx.Response, direct: httpx.Response) -> None:
    """The answer through HAProxy is the answer without it."""
    assert via.status_code == direct.status_code, via.text
    assert _body(via) == _body(direct)
    for name in ("content-type", "x-site", "x-scope"):
        assert via.headers.get(name) == direct.headers.get(name), name
    sites = [e.split(";")[0] for e in via.headers.get("x-scope-sites", "").split(", ")]
    assert sites == [e.split(";")[0] for e in direct.headers.get("x-scope-sites", "").split(", ")]


@pytest.mark.parametrize(
    ("service", "path", "backend_path"),
    [
        ("compute", "/compute/v2.1/servers?limit=2", "/v2.1/servers"),
        ("image", "/image/v2/images", "/v2/images"),
        ("network", "/network/v2.0/networks", "/v2.0/networks"),
        ("identity", "/identity/v3/users", "/v3/users"),
        ("identity", "/identity/v3/auth/tokens", "/v3/auth/tokens"),
        ("placement", "/placement", "/"),
    ],
)
def test_a_request_without_a_scope_goes_straight_to_the_service(
    site: Site, service: str, path: str, backend_path: str
) -> None:
    headers = {"X-Auth-Token": "gAAAA-plain-token", "X-Subject-Token": "gAAAA-subject"}
    site.reset()
    with site.client() as client:
        via = client.get(site.front + path, headers=headers)
    assert site.recorder.seen == []  # the gateway never saw it
    got = site.berlin.requests()
    assert [(r.method, r.path) for r in got] == [("GET", backend_path)]
    assert got[0].headers["x-auth-token"] == "gAAAA-plain-token"
    assert got[0].headers["x-forwarded-proto"] == "https"
    assert got[0].headers["x-forwarded-prefix"] == f"/{service}"
    with httpx.Client(timeout=20) as plain:
        direct = plain.get(site.gateway + path, headers=headers)
    assert site.recorder.seen == [("GET", path.partition("?")[0])]
    assert site.berlin.requests()[-1].path == backend_path
    assert via.status_code == direct.status_code, via.text
    assert _body(via) == _body(direct)
    assert via.headers["x-site"] == direct.headers["x-site"] == "Berlin"


def test_the_gateways_own_paths_reach_the_gateway(site: Site) -> None:
    site.reset()
    with site.client() as client:
        health = client.get(site.front + "/healthz")
        discovery = client.get(site.front + "/.well-known/scoped")
    assert health.status_code == 200
    assert health.json()["site"] == "Berlin"
    assert discovery.json()["sites"] == ["Berlin", "Denver"]
    assert site.recorder.seen == [("GET", "/healthz"), ("GET", "/.well-known/scoped")]
    assert site.berlin.received == []


def _scoped_cases() -> list[Any]:
    b64 = encode_scope(DENVER)
    token = f"gAAAA-user!scope!{b64}"
    return [
        pytest.param("/compute/v2.1/servers", {"X-Scope": DENVER}, "Denver", id="X-Scope"),
        pytest.param(
            "/compute/v2.1/servers", {"X-Auth-Token": token}, "Denver", id="X-Auth-Token suffix"
        ),
        pytest.param(
            "/identity/v3/auth/tokens",
            {
                "X-Auth-Token": "gAAAA-service",
                "X-Subject-Token": "gAAAA-user!scope!" + encode_scope("<identity: Berlin>"),
            },
            "Berlin",
            id="X-Subject-Token suffix",
        ),
        pytest.param(f"/scope/{b64}/compute/v2.1/servers", {}, "Denver", id="URL prefix"),
    ]


@pytest.mark.parametrize(("path", "headers", "answered_by"), _scoped_cases())
def test_a_request_with_a_scope_goes_to_the_gateway(
    site: Site, path: str, headers: dict[str, str], answered_by: str
) -> None:
    site.reset()
    with site.client() as client:
        via = client.get(site.front + path, headers=headers)
    assert site.recorder.seen == [("GET", path)]
    assert via.headers["x-site"] == answered_by, via.text
    answering = site.denver if answered_by == "Denver" else site.berlin
    assert len(answering.received) == 1
    if answered_by == "Denver":
        # Berlin's gateway reached Denver's over mutual TLS through the
        # egress listener: Denver's gateway (HTTPS) honoured the hop only
        # from Berlin's certificate, else it would have answered 403.
        assert via.status_code == 200, via.text
        assert via.headers["x-scope-sites"].startswith("Denver=200;")
    else:
        # The local Keystone gets the subject token bare, as the gateway sends it.
        assert answering.received[0].headers["x-subject-token"] == "gAAAA-user"
    with httpx.Client(timeout=20) as plain:
        direct = plain.get(site.gateway + path, headers=headers)
    _same(via, direct)


@pytest.mark.parametrize("mark", ["Denver>Berlin", "Denver > Berlin"])
def test_a_hop_from_a_peer_certificate_reaches_the_gateway(site: Site, mark: str) -> None:
    """The origin is read as the gateway reads it (spaces around it dropped)."""
    site.reset()
    hop = {"X-Scoped-Hop": mark}
    with site.client("Denver") as client:
        via = client.get(site.front + "/compute/v2.1/servers", headers=hop)
    assert via.status_code == 200, via.text
    assert site.recorder.seen == [("GET", "/compute/v2.1/servers")]
    assert [r.headers.get("x-scoped-hop") for r in site.berlin.received] == [None]
    assert site.denver.received == []  # served here, never planned again
    with httpx.Client(timeout=20) as plain:
        direct = plain.get(site.gateway + "/compute/v2.1/servers", headers=hop)
    _same(via, direct)


@pytest.mark.parametrize(
    ("cert", "hop", "says"),
    [
        (None, "Denver>Berlin", "this connection presented none"),
        ("Mallory", "Mallory>Berlin", "names no site"),
        ("Berlin", "Denver>Berlin", "comes from another site"),
        ("Denver", "Berlin > Berlin", "comes from another site"),
    ],
)
def test_a_hop_without_the_origins_certificate_is_refused_at_the_door(
    site: Site, cert: str | None, hop: str, says: str
) -> None:
    site.reset()
    with site.client(cert) as client:
        resp = client.get(site.front + "/compute/v2.1/servers", headers={"X-Scoped-Hop": hop})
    assert resp.status_code == 403
    assert says in resp.json()["error"]["message"]
    assert site.recorder.seen == []
    assert site.berlin.received == []


def test_big_tokens_and_long_scoped_urls_pass(site: Site) -> None:
    """Heads past HAProxy's stock 16 KiB buffer pass with the generated
    tune.bufsize, both ways; under stock buffers the same request fails.
    (Each header stays under 8190 bytes, what the stand-ins' aiohttp takes.)"""
    scope = "<compute: Denver, image: " + "|".join(["Berlin"] * 500) + ">"
    assert len(scope) > 3000
    b64 = encode_scope(scope)
    token = "gAAAA" + "x" * 3000
    headers = {
        "X-Scope": scope,
        "X-Auth-Token": f"{token}!scope!{b64}",
        "X-Service-Token": "gAAAA" + "s" * 7000,
    }
    path = f"/scope/{b64}/compute/v2.1/servers"
    assert len(path) + sum(len(k) + len(v) for k, v in headers.items()) > 20000
    # An answer head of over 16 KB, bypassed to Keystone: it sends back the
    # subject token and the request id it was given.
    echoed = {"X-Subject-Token": "gAAAA" + "y" * 8000, "X-OpenStack-Request-ID": "r" * 8100}
    site.reset()
    with site.client() as client:
        scoped = client.get(site.front + path, headers=headers)
        big_answer = client.get(site.front + "/identity/v3/auth/tokens", headers=echoed)
    assert scoped.status_code == 200, scoped.text
    assert scoped.headers["x-site"] == "Denver"
    assert len(site.recorder.seen) == 1
    assert big_answer.status_code == 200, big_answer.text
    for name, value in echoed.items():
        assert big_answer.headers[name] == value
    stock = start_haproxy(
        site.haproxy,
        site.folder / "stock",
        site.scoped_yaml,
        site.gateway.removeprefix("http://"),
        site.certs["Berlin"],
        site.ca.bundle,
        bufsize="16384",
    )
    try:
        with site.client() as client:
            refused = client.get(stock.url + path, headers=headers)
    finally:
        stock.stop()
    assert refused.status_code in (400, 431)


def test_timeouts_agree_with_the_gateways_keep_alive(site: Site) -> None:
    """HAProxy keeps an idle client connection as long as a gateway does,
    longer than a peer's pool keeps one: the pool always closes first."""
    config = site.started[0].config
    values = {
        line.split()[1]: line.split()[2]
        for line in config.splitlines()
        if line.strip().startswith("timeout ")
    }
    keep_alive = int(values["http-keep-alive"].removesuffix("s"))
    assert keep_alive == SERVER_KEEPALIVE
    assert keep_alive > KEEPALIVE
    assert int(values["client"].removesuffix("s")) >= keep_alive
    assert int(values["server"].removesuffix("s")) > 60  # the gateway's total timeout


def test_an_egress_target_given_by_address_is_checked_against_a_name() -> None:
    """HAProxy's host check matches DNS names only: a peer reached at an
    address (the lab's WAN link) is verified by the name its certificate
    carries."""
    spec = importlib.util.spec_from_file_location("haproxy_cfg", GENERATOR)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    sys.modules["haproxy_cfg"] = generator  # its dataclasses look their module up
    spec.loader.exec_module(generator)
    peer = generator._peer("Denver=127.0.0.1:18450=127.0.0.1:20100=localhost")
    text = generator.render(
        site="Berlin", sites=["Berlin", "Denver"], services=[], listen="127.0.0.1:1",
        gateway="127.0.0.1:2", cert="berlin.pem", ca="ca.pem", peers=[peer],
    )  # fmt: skip
    assert "bind 127.0.0.1:18450" in text
    assert "server Denver 127.0.0.1:20100 ssl verify required" in text
    assert "sni str(localhost) verifyhost localhost" in text
    plain = generator._peer("Denver=127.0.0.1:18450=denver.example.org:443")
    assert plain.servername is None


@pytest.fixture(scope="module")
def filter_front(site: Site) -> Iterator[str]:
    """Paris, a site whose services run the WSGI filter: HAProxy in front of
    its compute service (Berlin's stand-in plays it), no gateway."""
    scoped_yaml = site.folder / "paris.yaml"
    service = site.berlin_url + "/"
    paris = {
        "site": "Paris",
        "sites": {
            "Paris": {"endpoints": {"compute": service, "image": service}},
            "Berlin": {"endpoints": {"compute": site.front + "/compute"}},
            "Denver": {"endpoints": {"compute": site.front + "/compute"}},
        },
    }
    scoped_yaml.write_text(yaml.safe_dump(paris))
    proxy = start_haproxy(
        site.haproxy,
        site.folder / "paris",
        scoped_yaml,
        None,
        site.certs["Denver"],  # any certificate of the federation serves here
        site.ca.bundle,
        services=("compute", "image"),
    )
    assert proxy.config.count("frontend front_") == 2
    assert "backend gateway" not in proxy.config
    try:
        yield proxy.url
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Scope": "<compute: Berlin>"},  # the filter behind reads it
        {"X-Auth-Token": "gAAAA-user!scope!" + encode_scope("<compute: Berlin>")},
    ],
)
def test_a_filter_sites_front_sends_everything_to_the_service(
    site: Site, filter_front: str, headers: dict[str, str]
) -> None:
    site.reset()
    with site.client() as client:
        resp = client.get(filter_front + "/v2.1/servers", headers=headers)
    assert resp.status_code == 200, resp.text
    got = site.berlin.requests()
    assert [(r.method, r.path) for r in got] == [("GET", "/v2.1/servers")]  # path as sent
    assert got[0].headers["x-forwarded-proto"] == "https"
    for name, value in headers.items():
        assert got[0].headers[name.lower()] == value
    assert site.recorder.seen == []


@pytest.mark.parametrize(
    ("cert", "hop", "says"),
    [
        (None, "Berlin > Paris", "this connection presented none"),
        ("Mallory", "Mallory > Paris", "names no site"),
        ("Denver", "Berlin > Paris", "comes from another site"),
        ("Berlin", "Berlin > Paris", None),
    ],
)
def test_a_filter_sites_front_honours_a_hop_only_from_its_origin(
    site: Site, filter_front: str, cert: str | None, hop: str, says: str | None
) -> None:
    site.reset()
    with site.client(cert) as client:
        resp = client.get(filter_front + "/v2.1/servers", headers={"X-Scoped-Hop": hop})
    if says is None:
        assert resp.status_code == 200, resp.text
        assert [r.headers["x-scoped-hop"] for r in site.berlin.requests()] == [hop]
    else:
        assert resp.status_code == 403
        assert says in resp.json()["error"]["message"]
        assert site.berlin.requests() == []


def test_a_filter_site_front_for_a_service_it_does_not_run_is_refused(site: Site) -> None:
    scoped_yaml = site.folder / "paris-bad.yaml"
    scoped_yaml.write_text(
        yaml.safe_dump(
            {"site": "Paris", "sites": {"Paris": {"endpoints": {"compute": site.berlin_url}}}}
        )
    )
    run = subprocess.run(
        [sys.executable, str(GENERATOR), "--scoped", str(scoped_yaml), "--service",
         "network=127.0.0.1:1", "--cert", "c.pem", "--ca", "ca.pem"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode != 0
    assert "--service network: no endpoint of this site" in run.stderr
    assert "expected one of: compute" in run.stderr
    both = subprocess.run(
        [sys.executable, str(GENERATOR), "--scoped", str(scoped_yaml), "--service",
         "compute=127.0.0.1:1", "--listen", "127.0.0.1:2", "--cert", "c.pem", "--ca", "ca.pem"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert both.returncode == 2
    assert "goes without --listen and --gateway" in both.stderr
