"""Gateways served over HTTPS by uvicorn, as ``scoped gateway`` serves them
(issue 17.1): real servers on loopback, a throwaway federation CA, sites
calling each other over mutual TLS, and the hop header honoured only from a
peer whose certificate names a site (docs/design.md §4, §8)."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import yaml
from cryptography import x509
from scoped_cli import main as cli
from scoped_cli.serve import rfc4514, uvicorn_tls
from scoped_middleware.asgi import GatewayApp, create_app

from scoped.config import TlsSettings, parse_config
from scoped.errors import EXIT_BAD_INPUT
from scoped.tls import common_names
from tests.federation import free_port
from tests.pki import Authority, Issued
from tests.processes import gateway_command
from tests.standin import LoopThread

HOP = "x-scoped-hop"


class Backend:
    """A site's service: answers JSON naming its site, keeps what it got."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.received: list[dict[str, str | None]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append({"path": scope["path"], "hop": headers.get(HOP)})
        body = orjson.dumps({"site": self.site})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


_TASKS: list[asyncio.Task[None]] = []


async def _serve(app: Any, port: int, **options: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **options
    )
    server = uvicorn.Server(config)
    _TASKS.append(asyncio.ensure_future(server.serve()))
    for _ in range(500):
        if server.started:
            return server
        await asyncio.sleep(0.01)
    raise RuntimeError(f"nothing started on port {port}")


@dataclasses.dataclass
class Net:
    ca: Authority
    other: Authority
    certs: dict[str, Issued]
    gateways: dict[str, str]
    apps: dict[str, GatewayApp]
    backends: dict[str, Backend]

    def client(self, issued: Issued | None = None) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=self.ca.bundle)
        if issued is not None:
            ctx.load_cert_chain(issued.cert, issued.key)
        return httpx.Client(verify=ctx, timeout=10)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    """Berlin and Denver, gateways on HTTPS that call each other over mutual
    TLS; Rogue, a site in the registry whose certificate another CA signed;
    Vault, a gateway that requires a client certificate of every client."""
    folder = tmp_path_factory.mktemp("pki")
    ca, other = Authority(folder / "federation"), Authority(folder / "other", "another CA")
    names = ("Berlin", "Denver", "Vault")
    certs = {n: ca.issue(n) for n in names}
    certs["Mallory"] = ca.issue("Mallory")
    rogue_cert = other.issue("Rogue")
    ports = {n: free_port() for n in (*names, "Rogue")}
    gateways = {n: f"https://127.0.0.1:{p}" for n, p in ports.items()}
    servers: list[uvicorn.Server] = []
    with LoopThread() as worker:
        backends: dict[str, Backend] = {}
        backend_urls: dict[str, str] = {}
        for n in (*names, "Rogue"):
            backends[n] = Backend(n)
            port = free_port()
            servers.append(worker.call(_serve(backends[n], port)))
            backend_urls[n] = f"http://127.0.0.1:{port}"
        rogue_tls = TlsSettings(rogue_cert.cert, rogue_cert.key, other.bundle)
        servers.append(worker.call(_serve(backends["Rogue"], ports["Rogue"], **_tls(rogue_tls))))
        apps: dict[str, GatewayApp] = {}
        for n in names:
            tls = TlsSettings(
                certs[n].cert, certs[n].key, ca.bundle, require_client_cert=n == "Vault"
            )
            config = {
                "site": n,
                "sites": {
                    s: {"endpoints": {"compute": f"{gateways[s]}/compute"}}
                    for s in (*names, "Rogue")
                },
                "backends": {"compute": backend_urls[n]},
                "tls": dataclasses.asdict(tls),
            }
            apps[n] = create_app(parse_config(config, f"<{n}>"))
            servers.append(
                worker.call(_serve(apps[n], ports[n], lifespan="on", **uvicorn_tls(tls)))
            )
        try:
            yield Net(ca, other, certs, gateways, apps, backends)
        finally:
            for server in servers:
                server.should_exit = True
            worker.call(asyncio.sleep(0.5))


def _tls(tls: TlsSettings) -> dict[str, Any]:
    return {k: v for k, v in uvicorn_tls(tls).items() if k != "http"}


@pytest.fixture(autouse=True)
def forget(net: Net) -> None:
    for backend in net.backends.values():
        backend.received.clear()


def message(resp: httpx.Response) -> str:
    text: str = resp.json()["error"]["message"]
    return text


def test_a_gateway_serves_https_and_its_own_paths(net: Net) -> None:
    with net.client() as client:
        resp = client.get(f"{net.gateways['Berlin']}/healthz")
        assert resp.status_code == 200
        assert resp.json()["site"] == "Berlin"
        local = client.get(f"{net.gateways['Berlin']}/compute/v2.1/servers")
    assert local.status_code == 200
    assert local.json() == {"site": "Berlin"}
    assert net.backends["Berlin"].received == [{"path": "/v2.1/servers", "hop": None}]
    with pytest.raises(httpx.HTTPError):
        httpx.get(net.gateways["Berlin"].replace("https", "http") + "/healthz", timeout=5)


def test_a_request_forwarded_over_mutual_tls_is_served_by_the_peer(net: Net) -> None:
    url = f"{net.gateways['Berlin']}/compute/v2.1/servers"
    with net.client() as client:
        first = client.get(url, headers={"X-Scope": "<compute: Denver>"})
        # The idle connection to Denver dropped: the next call needs a new
        # one, which resumes the session, and Denver still knows it is Berlin.
        upstream: Any = net.apps["Berlin"].gateway.upstream
        for origin in upstream._origins.values():
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()
        second = client.get(url, headers={"X-Scope": "<compute: Denver>"})
    for resp in (first, second):
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"site": "Denver"}
        assert resp.headers["x-scope-sites"].startswith("Denver=200;")
    # Served by Denver's own service (a hop Denver refused would be a 403).
    assert len(net.backends["Denver"].received) == 2
    assert net.backends["Berlin"].received == []
    handshakes = net.apps["Berlin"].gateway.metrics.tls_handshakes.counts
    assert handshakes[("full",)] >= 1
    assert handshakes[("resumed",)] >= 1


@pytest.mark.parametrize(
    ("who", "hop", "expected"),
    [
        (None, "Berlin>Denver", "this connection presented none"),
        ("Mallory", "Berlin>Denver", "this connection's certificate names 'Mallory'"),
        ("Berlin", "Vault>Denver", "comes from site 'Vault', but the connection's certificate"),
    ],
)
def test_a_peer_without_a_site_certificate_cannot_get_a_request_treated_as_forwarded(
    net: Net, who: str | None, hop: str, expected: str
) -> None:
    issued = net.certs[who] if who else None
    with net.client(issued) as client:
        resp = client.get(f"{net.gateways['Denver']}/compute/v2.1/servers", headers={HOP: hop})
    assert resp.status_code == 403
    text = message(resp)
    assert expected in text
    if who != "Berlin":
        assert "the x-scoped-hop header (a request forwarded by another site) is honoured " in text
        assert "expected a client certificate, verified against this gateway's tls.ca" in text
    assert net.backends["Denver"].received == []  # nothing was served


def test_a_peer_with_a_site_certificate_gets_its_request_served_here(net: Net) -> None:
    with net.client(net.certs["Berlin"]) as client:
        resp = client.get(
            f"{net.gateways['Denver']}/compute/v2.1/servers",
            headers={HOP: "Berlin>Denver", "X-Scope": "<compute: Berlin>"},
        )
    # Served at Denver as forwarded: its scope is not planned again.
    assert resp.status_code == 200
    assert resp.json() == {"site": "Denver"}
    assert net.backends["Denver"].received == [{"path": "/v2.1/servers", "hop": None}]
    assert net.backends["Berlin"].received == []


def test_a_client_certificate_of_another_ca_ends_the_handshake(net: Net) -> None:
    stranger = net.other.issue("Berlin", file_name="other-Berlin")
    with net.client(stranger) as client, pytest.raises(httpx.HTTPError):
        client.get(f"{net.gateways['Denver']}/healthz")


def test_a_site_whose_certificate_another_ca_signed_is_refused_naming_the_site(
    net: Net,
) -> None:
    with net.client() as client:
        resp = client.get(
            f"{net.gateways['Berlin']}/compute/v2.1/servers",
            headers={"X-Scope": "<compute: Rogue>"},
        )
    assert resp.status_code == 502
    assert resp.headers["x-scope-sites"].startswith("Rogue=error;")
    text = message(resp)
    assert "Rogue" in text
    assert "is not trusted here" in text
    assert "tls.ca, the federation's CA bundle" in text
    assert net.backends["Rogue"].received == []


def test_a_gateway_that_requires_client_certificates_takes_no_client_without_one(
    net: Net,
) -> None:
    url = f"{net.gateways['Vault']}/healthz"
    with net.client() as client, pytest.raises(httpx.HTTPError):
        client.get(url)
    with net.client(net.certs["Denver"]) as client:
        assert client.get(url).status_code == 200


@pytest.mark.parametrize(
    "value",
    ["Berlin", "us-east-1", "a,b+c", 'say "hi"; <x>', "#hash", " padded ", "Zürich", "back\\slash"],
)
def test_the_subject_a_server_writes_is_the_one_the_core_reads(value: str) -> None:
    subject = ((("organizationName", "scoped, inc."),), (("commonName", value),))
    assert rfc4514(subject).endswith(",O=scoped\\, inc.")
    assert common_names(rfc4514(subject)) == (value,)


# -- the command ---------------------------------------------------------------


def write_config(tmp_path: Path, tls: dict[str, Any]) -> Path:
    path = tmp_path / "scoped.yaml"
    config = {
        "site": "Berlin",
        "sites": {"Berlin": {}},
        "backends": {"compute": "http://127.0.0.1:9"},
        "tls": tls,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_gateway(path: Path, *extra: str) -> int:
    argv = ["gateway", "--config", str(path), "--listen", f"127.0.0.1:{free_port()}"]
    return cli.main([*argv, *extra])


def test_a_certificate_that_cannot_be_read_is_a_clear_error_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = Authority(tmp_path / "ca")
    berlin = ca.issue("Berlin")
    path = write_config(
        tmp_path, {"cert": berlin.cert, "key": str(tmp_path / "gone.key"), "ca": ca.bundle}
    )
    assert run_gateway(path) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{path}: tls.key: cannot read '{tmp_path / 'gone.key'}'" in err
    assert "Traceback" not in err


def test_https_is_served_with_uvicorn_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = Authority(tmp_path / "ca")
    berlin = ca.issue("Berlin")
    path = write_config(tmp_path, {"cert": berlin.cert, "key": berlin.key, "ca": ca.bundle})
    assert run_gateway(path, "--server", "granian") == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "tls.cert: HTTPS is served with --server uvicorn only" in err
    assert "Traceback" not in err


def test_scoped_gateway_serves_https_and_knows_its_peers(tmp_path: Path) -> None:
    """The command itself (uvicorn with uvloop, as deployed): HTTPS, and a
    hop honoured from the certificate of a site of its registry only."""
    ca = Authority(tmp_path / "ca")
    berlin, denver, mallory = ca.issue("Berlin"), ca.issue("Denver"), ca.issue("Mallory")
    backend = free_port()
    config = {
        "site": "Berlin",
        "sites": {"Berlin": {}, "Denver": {"endpoints": {"compute": "https://127.0.0.1:9"}}},
        "backends": {"compute": f"http://127.0.0.1:{backend}"},
        "tls": {"cert": berlin.cert, "key": berlin.key, "ca": ca.bundle},
    }
    with gateway_command(tmp_path, config, ssl.create_default_context(cafile=ca.bundle)) as gw:
        url = gw.url
        hop = {HOP: "Denver>Berlin"}

        def get(issued: Issued) -> httpx.Response:
            ctx = ssl.create_default_context(cafile=ca.bundle)
            ctx.load_cert_chain(issued.cert, issued.key)
            return httpx.get(f"{url}/compute/v2.1/servers", headers=hop, verify=ctx, timeout=5)

        refused = get(mallory)
        assert refused.status_code == 403
        assert message(refused).endswith("this connection's certificate names 'Mallory'")
        # Honoured: served here, at a backend where nothing listens.
        honoured = get(denver)
        assert honoured.status_code == 502
        assert honoured.headers["x-scope-sites"].startswith("Berlin=refused;")


def test_behind_a_front_door_links_name_the_scheme_the_client_used(tmp_path: Path) -> None:
    """``tls.serve: false``: the gateway serves plain HTTP on loopback behind
    a front door that terminated TLS, and a ``Location`` it rewrites says
    ``https://`` when the door says so (``X-Forwarded-Proto``)."""
    ca = Authority(tmp_path / "ca")
    berlin = ca.issue("Berlin")
    backend = free_port()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline() not in (b"\r\n", b""):
            pass
        location = f"http://127.0.0.1:{backend}/v2/images/x"
        writer.write(
            b"HTTP/1.1 201 Created\r\nlocation: %b\r\ncontent-length: 0\r\n"
            b"connection: close\r\n\r\n" % location.encode()
        )
        await writer.drain()
        writer.close()

    with LoopThread() as loop:
        server = loop.call(asyncio.start_server(answer, "127.0.0.1", backend))
        try:
            plain, fronted, port = _behind_a_front_door(tmp_path, berlin, ca, backend)
        finally:
            server.close()
    assert plain.status_code == fronted.status_code == 201
    assert plain.headers["location"] == f"http://127.0.0.1:{port}/image/v2/images/x"
    assert fronted.headers["location"] == f"https://127.0.0.1:{port}/image/v2/images/x"


def _behind_a_front_door(
    tmp_path: Path, cert: Issued, ca: Authority, backend: int
) -> tuple[httpx.Response, httpx.Response, int]:
    """``scoped gateway`` with ``tls.serve: false``: the same POST without and
    with the front door's ``X-Forwarded-Proto``."""
    config = {
        "site": "Berlin",
        "sites": {"Berlin": {}},
        "backends": {"image": f"http://127.0.0.1:{backend}"},
        "tls": {"cert": cert.cert, "key": cert.key, "ca": ca.bundle, "serve": False},
    }
    with gateway_command(tmp_path, config) as gw:
        plain = httpx.post(f"{gw.url}/image/v2/images", timeout=10)
        fronted = httpx.post(
            f"{gw.url}/image/v2/images", headers={"X-Forwarded-Proto": "https"}, timeout=10
        )
    return plain, fronted, gw.port


def served_serial(port: int, ca: Authority) -> int:
    """The serial number of the certificate a new connection is served."""
    ctx = ssl.create_default_context(cafile=ca.bundle)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _healthz(conn: http.client.HTTPSConnection) -> int:
    """``/healthz`` on ``conn``, which must still be the connection it was."""
    before = conn.sock
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    resp.read()
    assert before is None or conn.sock is before, "a new connection was opened"
    return resp.status


def _wait_for(what: str, check: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)


def test_a_renewed_certificate_is_served_after_sighup_without_dropping_a_connection(
    tmp_path: Path,
) -> None:
    ca = Authority(tmp_path / "ca")
    berlin = ca.issue("Berlin")
    config = {
        "site": "Berlin",
        "sites": {"Berlin": {"endpoints": {"compute": "https://127.0.0.1:9/compute"}}},
        "backends": {"compute": "http://127.0.0.1:9"},
        "tls": {"cert": berlin.cert, "key": berlin.key, "ca": ca.bundle},
    }
    verify = ssl.create_default_context(cafile=ca.bundle)
    with gateway_command(tmp_path, config, verify) as gw:
        first = served_serial(gw.port, ca)
        kept = http.client.HTTPSConnection("127.0.0.1", gw.port, timeout=5, context=verify)
        try:
            assert _healthz(kept) == 200
            renewed = ca.issue("Berlin")  # the same files, a new certificate
            assert renewed == berlin
            gw.proc.send_signal(signal.SIGHUP)
            _wait_for("the renewed certificate", lambda: served_serial(gw.port, ca) != first)
            second = served_serial(gw.port, ca)
            assert _healthz(kept) == 200  # the kept connection lives on
            # A key that does not match the certificate changes nothing.
            Path(berlin.key).write_bytes(Path(ca.issue("Other").key).read_bytes())
            gw.proc.send_signal(signal.SIGHUP)
            _wait_for("the refusal in the log", lambda: "stays in use" in gw.log.read_text())
            assert served_serial(gw.port, ca) == second
            assert _healthz(kept) == 200
        finally:
            kept.close()
    log = gw.log.read_text()
    assert log.count("stays in use") == 1  # the renewal went without a word
    assert "tls reload (SIGHUP): " in log
    assert "tls.cert, tls.key: expected a PEM certificate" in log
    assert "(key values mismatch)" in log
