"""End to end: the sites' HAProxy front doors (deploy/haproxy/), and TLS
with mutual authentication on every WAN link of the lab.

Each gateway site runs HAProxy in front: TLS with a certificate of the lab's
CA (CN = the site), requests without a scope straight to the services, the
rest to the gateway, a hop accepted only from the origin site's certificate.
Berlin's gateway reaches Denver's front door over TLS across the WAN link,
presenting Berlin's certificate (``tls.serve: false``). Paris, whose
services run the WSGI filter, has a TLS front per service that applies the
same hop rule; its filter calls the gateway sites' front doors over TLS.
"""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from .conftest import Lab

pytestmark = pytest.mark.e2e

DENVER_FRONT = "https://127.0.0.1:18543"
PARIS_COMPUTE_FRONT = "https://127.0.0.1:18645"  # Paris's nova, behind its HAProxy
BERLIN_TO_DENVER = "127.0.0.1:20100"  # the WAN link to Denver's front door


def client(lab: Lab, cert: str | None = None) -> httpx.Client:
    pki = lab.dir / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return httpx.Client(verify=ctx, timeout=60)


def token(lab: Lab, site: str) -> str:
    out = lab.openstack("token", "issue", "-f", "value", "-c", "id", cloud=site)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_link_between_gateways_carries_tls_only(lab: Lab) -> None:
    """Plain HTTP across the Berlin -> Denver link gets no HTTP answer: what
    crosses it is TLS (Berlin's gateway speaks it; the front door wants it)."""
    forwards = (lab.dir / "links" / "forwards").read_text()
    assert f"Berlin Denver {BERLIN_TO_DENVER.split(':')[1]} 18543 front-door" in forwards
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{BERLIN_TO_DENVER}/healthz", timeout=10)
    with client(lab) as tls:  # the same link, over TLS: Denver's front door
        assert tls.get(f"https://{BERLIN_TO_DENVER}/healthz").status_code == 200


def test_every_wan_link_carries_tls_only(lab: Lab) -> None:
    """Every path between two sites, to a gateway site's front door, to each
    service of the filter site, or to a Keystone for K2K, ends in a TLS
    server with a certificate of the lab CA: plain HTTP gets no answer."""
    lines = (lab.dir / "links" / "forwards").read_text().splitlines()
    links = [line.split() for line in lines if line and not line.startswith("#")]
    kinds = {what for *_, what in links}
    assert kinds >= {"front-door", "k2k", "compute-front", "identity-front"}, kinds
    assert all(what.endswith(("front-door", "-front", "k2k")) for what in kinds), kinds
    ctx = ssl.create_default_context(cafile=str(lab.dir / "pki" / "ca.pem"))
    for src, dst, listen, _target, what in links:
        where = f"{src} -> {dst} {what} (127.0.0.1:{listen})"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{listen}/", timeout=10).raise_for_status()
        raw = socket.create_connection(("127.0.0.1", int(listen)), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3"), where


def test_the_front_door_sends_unscoped_requests_to_the_service_itself(lab: Lab) -> None:
    headers = {"X-Auth-Token": token(lab, "Denver")}
    with client(lab) as tls:
        plain = tls.get(f"{DENVER_FRONT}/compute/v2.1/servers", headers=headers)
        scoped = tls.get(
            f"{DENVER_FRONT}/compute/v2.1/servers",
            headers={**headers, "X-Scope": "<nova: Denver>"},
        )
    assert plain.status_code == scoped.status_code == 200, (plain.text, scoped.text)
    assert "x-scope" not in plain.headers  # Nova's own answer: the gateway never saw it
    assert scoped.headers["x-scope"] == "<compute: Denver, *: Denver>"
    names = {s["name"] for s in plain.json()["servers"]}
    assert names == {s["name"] for s in scoped.json()["servers"]}
    assert "vm-denver" in names


ANOTHER_SITE = "another site than the one the certificate of this connection names"


@pytest.mark.parametrize(
    ("target", "cert", "refused"),
    [
        ("Denver", None, "this connection presented none"),
        ("Denver", "paris", ANOTHER_SITE),
        ("Denver", "berlin", None),
        # Paris runs the WSGI filter: its HAProxy has a front per service.
        ("Paris", None, "this connection presented none"),
        ("Paris", "denver", ANOTHER_SITE),
        ("Paris", "berlin", None),
    ],
)
def test_a_hop_is_honoured_only_from_its_origins_certificate(
    lab: Lab, target: str, cert: str | None, refused: str | None
) -> None:
    url = {
        "Denver": f"{DENVER_FRONT}/compute/v2.1/servers",
        "Paris": f"{PARIS_COMPUTE_FRONT}/v2.1/servers",
    }[target]
    headers = {"X-Auth-Token": token(lab, target), "X-Scoped-Hop": f"Berlin>{target}"}
    with client(lab, cert) as tls:
        resp = tls.get(url, headers=headers)
    if refused is None:
        assert resp.status_code == 200, resp.text
        assert f"vm-{target.lower()}" in {s["name"] for s in resp.json()["servers"]}
    else:
        assert resp.status_code == 403
        assert refused in resp.json()["error"]["message"]


def test_each_sites_certificate_names_it_and_its_key_is_private(lab: Lab) -> None:
    pki: Path = lab.dir / "pki"
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    for site in ("Berlin", "Denver", "Paris"):
        cert = x509.load_pem_x509_certificate((pki / f"{site.lower()}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        [cn] = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert cn.value == site
        assert (pki / f"{site.lower()}.key").stat().st_mode & 0o077 == 0


def test_keystone_to_keystone_exchanges_cross_the_wan_over_tls(lab: Lab) -> None:
    """Berlin's Keystone sends its users to Denver's Keystone at an https://
    URL across the WAN link (Apache's TLS port, the lab CA), and plain HTTP
    there gets no answer."""
    out = lab.openstack("service", "provider", "show", "Denver", "-f", "json", cloud="Berlin")
    assert out.returncode == 0, out.stderr
    sp_url = json.loads(out.stdout)["sp_url"]
    assert sp_url.startswith("https://127.0.0.1:") and sp_url.endswith("/v3/mellon/paosResponse")
    port = sp_url.split(":")[2].split("/")[0]
    assert f"Berlin Denver {port} 15143 k2k" in (lab.dir / "links" / "forwards").read_text()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/v3", timeout=10).raise_for_status()
    with client(lab) as tls:
        assert tls.get(f"https://127.0.0.1:{port}/v3").status_code == 200
