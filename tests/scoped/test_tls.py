"""TLS where a request crosses a site boundary (issue 17.1, docs/design.md §4,
§8): the ``tls`` config, the upstream pool against real TLS servers on
loopback (verified against the federation CA only, a client certificate
presented, connections kept and sessions resumed), and the core's rule for
who may send the hop header. The gateway served over HTTPS by uvicorn is in
tests/cli/test_serve_tls.py."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from pathlib import Path
from typing import Any

import orjson
import pytest

from scoped.config import Timeouts, TlsSettings, parse_config
from scoped.errors import CallError, ConfigError, Failure
from scoped.gateway import Gateway
from scoped.http import Request
from scoped.identity import Identities
from scoped.memory import Exchange, MemoryReply, MemoryUpstream, json_reply
from scoped.tls import (
    Peer,
    client_context,
    common_names,
    hop_refusal,
    reload_certificates,
    server_context,
)
from scoped.upstream import HttpUpstream
from tests.pki import Authority, Issued

SITES = ("Berlin", "Denver", "Paris")
TIMEOUTS = Timeouts(2.0, 5.0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The federation's CA with a certificate per site, and a CA of nobody's."""
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority(folder / "federation")
    other = Authority(folder / "other", "some other CA")
    return {
        "ca": ca.bundle,
        "sites": {n: ca.issue(n) for n in SITES},
        "stranger": ca.issue("Mallory"),
        "other_ca": other.bundle,
        "other": other.issue("Denver"),
    }


def settings(pki: dict[str, Any], site: str = "Berlin", **extra: Any) -> TlsSettings:
    issued: Issued = pki["sites"][site]
    return TlsSettings(cert=issued.cert, key=issued.key, ca=pki["ca"], **extra)


# -- config -----------------------------------------------------------------


def config_error(tls: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config({"site": "Berlin", "sites": {"Berlin": {}}, "tls": tls}, "gw.yaml")
    return str(err.value)


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        ("yes", "gw.yaml: tls: expected a mapping with 'cert', 'key', 'ca'"),
        ({"cert": "c.pem"}, "gw.yaml: tls.key: expected the key file too"),
        ({"key": "k.pem"}, "gw.yaml: tls.cert: expected the cert file too"),
        ({"cert": "c.pem", "key": "k.pem"}, "gw.yaml: tls.ca: expected the federation's CA"),
        ({"ca": ""}, "gw.yaml: tls.ca: expected the path of a PEM file"),
        ({"ca": "ca.pem", "require_client_cert": "yes"}, "tls.require_client_cert: expected "),
        ({"ca": "ca.pem", "require_client_cert": True}, "expected tls.cert and tls.key too"),
        ({"certificate": "c.pem"}, "tls.certificate: unknown key (allowed: cert, key, ca,"),
        ({"ca": "ca.pem", "serve": "no"}, "gw.yaml: tls.serve: expected true or false"),
        (
            {
                "cert": "c.pem",
                "key": "k.pem",
                "ca": "ca.pem",
                "serve": False,
                "require_client_cert": True,
            },
            "tls.require_client_cert: expected tls.cert and tls.key too, served",
        ),
    ],
)
def test_a_bad_tls_section_says_what_where_and_what_was_expected(tls: Any, expected: str) -> None:
    assert expected in config_error(tls)


def test_the_tls_section_is_optional_and_read_as_given() -> None:
    base: dict[str, Any] = {"site": "Berlin", "sites": {"Berlin": {}}}
    assert not parse_config(base).tls.serving
    tls = {"cert": "c.pem", "key": "k.pem", "ca": "ca.pem", "require_client_cert": True}
    got = parse_config({**base, "tls": tls}).tls
    assert got == TlsSettings("c.pem", "k.pem", "ca.pem", True)
    assert got.serving


def test_files_that_cannot_be_loaded_are_config_errors_naming_the_key(
    pki: dict[str, Any], tmp_path: Path
) -> None:
    missing = str(tmp_path / "nowhere.pem")
    with pytest.raises(ConfigError, match=r"gw\.yaml: tls\.ca: cannot read .*nowhere\.pem"):
        client_context(TlsSettings(ca=missing), "gw.yaml")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"tls\.ca: expected a PEM bundle of CA certificates"):
        client_context(TlsSettings(ca=str(garbage)), "gw.yaml")
    berlin, denver = pki["sites"]["Berlin"], pki["sites"]["Denver"]
    mismatched = TlsSettings(cert=berlin.cert, key=denver.key, ca=pki["ca"])
    with pytest.raises(ConfigError, match=r"tls\.cert, tls\.key: expected a PEM certificate"):
        server_context(mismatched, "gw.yaml")
    with pytest.raises(ConfigError, match=r"tls\.key: cannot read .*nowhere\.pem"):
        client_context(TlsSettings(cert=berlin.cert, key=missing, ca=pki["ca"]), "gw.yaml")


def test_the_server_asks_for_client_certificates_and_requires_them_only_if_told(
    pki: dict[str, Any],
) -> None:
    assert server_context(TlsSettings(ca=pki["ca"])) is None  # plain HTTP
    optional = server_context(settings(pki))
    required = server_context(settings(pki, require_client_cert=True))
    assert optional is not None and optional.verify_mode == ssl.CERT_OPTIONAL
    assert required is not None and required.verify_mode == ssl.CERT_REQUIRED


# -- who may send the hop -----------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "names"),
    [
        ("CN=Berlin,O=scoped", ("Berlin",)),
        ("O=scoped", ()),
        ("cn=us-east-1", ("us-east-1",)),
        ("CN=a\\,b\\+c,O=x", ("a,b+c",)),
        ("CN=Z\\C3\\BCrich", ("Zürich",)),
        ("CN=Berlin+OU=edge,O=scoped", ("Berlin",)),
        ("2.5.4.3=Paris", ("Paris",)),
        ("CN=#0403414243", ()),  # a BER value is no name
    ],
)
def test_common_names_of_an_rfc4514_subject(subject: str, names: tuple[str, ...]) -> None:
    assert common_names(subject) == names


def test_plain_http_trusts_the_hop_as_it_comes() -> None:
    assert hop_refusal(None, "Berlin", SITES, serving=False) is None
    assert hop_refusal(Peer(), "Anyone", SITES, serving=False) is None


def test_over_https_the_hop_needs_a_certificate_naming_the_site_it_claims() -> None:
    berlin = Peer(tls=True, subject="CN=Berlin,O=scoped")
    assert hop_refusal(berlin, "Berlin", SITES, serving=True) is None
    no_cert = hop_refusal(Peer(tls=True), "Berlin", SITES, serving=True)
    assert no_cert is not None
    assert "x-scoped-hop header" in no_cert
    assert "expected a client certificate" in no_cert
    assert "'Berlin', 'Denver', 'Paris'" in no_cert
    assert no_cert.endswith("this connection presented none")
    plain = hop_refusal(None, "Berlin", SITES, serving=True)
    assert plain is not None and plain.endswith("came over plain HTTP")
    stranger = hop_refusal(Peer(True, "CN=Mallory"), "Berlin", SITES, serving=True)
    assert stranger is not None and stranger.endswith("certificate names 'Mallory'")
    posing = hop_refusal(berlin, "Paris", SITES, serving=True)
    assert posing is not None
    assert "comes from site 'Paris', but the connection's certificate names 'Berlin'" in posing


def test_a_long_registry_is_named_in_part() -> None:
    sites = [f"S{i}" for i in range(1000)]
    refused = hop_refusal(Peer(tls=True), "S1", sites, serving=True)
    assert refused is not None and "'S7' and 992 more" in refused


def gateway(pki: dict[str, Any], **tls: Any) -> tuple[Gateway, MemoryUpstream]:
    async def local(exchange: Exchange) -> MemoryReply:
        return json_reply(200, {"served": "Denver", "hop": exchange.header("x-scoped-hop")})

    upstream = MemoryUpstream({"http://denver.test": local, "http://berlin.test": local})
    config = {
        "site": "Denver",
        "sites": {
            "Berlin": {"endpoints": {"compute": "http://berlin.test/compute"}},
            "Denver": {},
        },
        "backends": {"compute": "http://denver.test"},
        "tls": dataclasses.asdict(settings(pki, "Denver", **tls)),
    }
    return Gateway(parse_config(config), upstream), upstream


def forwarded(peer: Peer | None, hop: str = "Berlin>Denver") -> Request:
    return Request(
        "GET", "compute", "/v2.1/servers", "", (("x-scoped-hop", hop),), "https://gw", peer=peer
    )


def test_the_gateway_refuses_a_hop_from_anyone_but_a_site_with_403(pki: dict[str, Any]) -> None:
    gw, upstream = gateway(pki)

    async def main() -> list[Any]:
        out = []
        for peer in (None, Peer(tls=True), Peer(True, "CN=Mallory"), Peer(True, "CN=Paris")):
            out.append(await gw.handle(forwarded(peer)))
        return out

    for resp in asyncio.run(main()):
        assert resp.status == 403
        assert isinstance(resp.body, bytes)
        error = orjson.loads(resp.body)["error"]
        assert error["title"] == "Forbidden"
        assert "honoured only from a gateway of the federation" in error["message"]
    assert upstream.calls == []  # nothing was served


def test_behind_a_front_door_the_certificate_is_only_a_client_certificate(
    pki: dict[str, Any],
) -> None:
    """``serve: false``: a front door (HAProxy) terminates TLS and applies the
    hop rule; the gateway behind it serves plain HTTP on loopback, trusts the
    hop, and still presents its certificate to the sites it calls."""
    gw, upstream = gateway(pki, serve=False)
    assert not gw.config.tls.serving
    resp = asyncio.run(gw.handle(forwarded(None)))
    assert resp.status == 200
    assert [c.origin for c in upstream.calls] == ["http://denver.test"]

    async def main() -> tuple[int, bytes]:
        async with TlsSite(pki["sites"]["Berlin"], pki["ca"], require_client=True) as site:
            up = HttpUpstream(tls=client_context(settings(pki, "Denver", serve=False)))
            try:
                return await get(up, site.url)
            finally:
                await up.close()

    assert asyncio.run(main()) == (200, b"Denver")  # the site saw Denver's certificate


def test_the_gateway_serves_a_hop_from_the_site_its_certificate_names(
    pki: dict[str, Any],
) -> None:
    gw, upstream = gateway(pki)
    resp = asyncio.run(gw.handle(forwarded(Peer(True, "CN=Berlin,O=scoped"))))
    assert resp.status == 200
    assert [c.origin for c in upstream.calls] == ["http://denver.test"]  # served here only
    misdirected = asyncio.run(gw.handle(forwarded(Peer(True, "CN=Berlin"), "Berlin>Paris")))
    assert misdirected.status == 421


# -- the upstream pool over TLS -------------------------------------------------


class TlsSite:
    """A TLS site on loopback answering every request with the subject CN of
    the client certificate it verified (or ``-``); ``close`` ends every
    connection after its answer (so the pool needs a new one each time)."""

    def __init__(
        self, issued: Issued, ca: str, *, require_client: bool = False, close: bool = False
    ) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(issued.cert, issued.key)
        self.ctx.load_verify_locations(ca)
        self.ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
        self.close = close
        self.connections = 0
        self.resumed = 0
        self.handshake_errors: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TlsSite:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: self.handshake_errors.append(str(ctx)))
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")
        self.connections += 1
        self.resumed += bool(tls.session_reused)
        cert = tls.getpeercert() or {}
        names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        body = (names[0] if names else "-").encode()
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                extra = b"connection: close\r\n" if self.close else b""
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)
                )
                await writer.drain()
                if self.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def get(up: HttpUpstream, url: str) -> tuple[int, bytes]:
    reply = await up.send("GET", f"{url}/x", (), None, TIMEOUTS)
    return reply.status, await reply.read(1 << 20)


def test_a_site_is_verified_against_the_federation_ca_and_sees_this_gateways_cert(
    pki: dict[str, Any],
) -> None:
    async def main() -> tuple[int, bytes]:
        async with TlsSite(pki["sites"]["Denver"], pki["ca"], require_client=True) as site:
            up = HttpUpstream(tls=client_context(settings(pki, "Berlin")))
            try:
                return await get(up, site.url)
            finally:
                await up.close()

    assert asyncio.run(main()) == (200, b"Berlin")


def test_a_site_whose_certificate_another_ca_signed_is_refused_with_a_clear_error(
    pki: dict[str, Any],
) -> None:
    async def main() -> CallError:
        async with TlsSite(pki["other"], pki["other_ca"]) as site:
            up = HttpUpstream(tls=client_context(settings(pki, "Berlin")))
            try:
                with pytest.raises(CallError) as err:
                    await get(up, site.url)
                return err.value
            finally:
                await up.close()

    err = asyncio.run(main())
    assert not err.sent
    assert "TLS: the certificate of 127.0.0.1:" in err.detail
    assert "is not trusted here (" in err.detail
    assert "tls.ca, the federation's CA bundle" in err.detail


def test_the_system_cas_are_not_trusted_once_a_federation_ca_is_given(
    pki: dict[str, Any],
) -> None:
    ctx = client_context(TlsSettings(ca=pki["ca"]))
    subjects = [dict(x[0] for x in c["subject"]).get("commonName") for c in ctx.get_ca_certs()]
    assert subjects == ["scoped test federation CA"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_a_site_that_requires_a_client_certificate_refuses_a_gateway_without_one(
    pki: dict[str, Any],
) -> None:
    async def main() -> str:
        async with TlsSite(pki["sites"]["Denver"], pki["ca"], require_client=True) as site:
            up = HttpUpstream(tls=client_context(TlsSettings(ca=pki["ca"])))
            try:
                with pytest.raises(Failure) as err:
                    await get(up, site.url)
                return err.value.detail
            finally:
                await up.close()

    # TLS 1.3: the client's handshake ends before the server checks for a
    # certificate; the refusal is a connection closed unanswered.
    detail = asyncio.run(main())
    assert detail.startswith("the site closed the connection before answering (a new TLS")
    assert "if the site requires a client certificate, this gateway's tls.cert" in detail


def test_tls_connections_are_kept_alive_one_handshake_for_many_requests(
    pki: dict[str, Any],
) -> None:
    handshakes: list[str] = []

    async def main() -> tuple[list[bytes], int]:
        async with TlsSite(pki["sites"]["Denver"], pki["ca"]) as site:
            up = HttpUpstream(tls=client_context(settings(pki)), on_handshake=handshakes.append)
            try:
                bodies = [(await get(up, site.url))[1] for _ in range(5)]
                return bodies, site.connections
            finally:
                await up.close()

    bodies, connections = asyncio.run(main())
    assert bodies == [b"Berlin"] * 5
    assert connections == 1
    assert handshakes == ["full"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_new_connection_resumes_the_origins_last_session(pki: dict[str, Any], loop: str) -> None:
    handshakes: list[str] = []

    async def main() -> tuple[list[bytes], int, int]:
        async with TlsSite(pki["sites"]["Denver"], pki["ca"], close=True) as site:
            up = HttpUpstream(tls=client_context(settings(pki)), on_handshake=handshakes.append)
            try:
                bodies = [(await get(up, site.url))[1] for _ in range(4)]
                return bodies, site.connections, site.resumed
            finally:
                await up.close()

    if loop == "uvloop":
        import uvloop  # noqa: PLC0415

        result = uvloop.run(main())
    else:
        result = asyncio.run(main())
    bodies, connections, resumed = result
    # The site still knows who it talks to on a resumed session.
    assert bodies == [b"Berlin"] * 4
    assert connections == 4
    assert resumed == 3
    assert handshakes == ["full", "resumed", "resumed", "resumed"]


def test_a_plain_context_would_make_a_full_handshake_every_time(pki: dict[str, Any]) -> None:
    """What the resumption saves: the same calls with a context that offers
    no session (Python's own) each make a full handshake."""
    handshakes: list[str] = []

    async def main() -> int:
        async with TlsSite(pki["sites"]["Denver"], pki["ca"], close=True) as site:
            ctx = ssl.create_default_context(cafile=pki["ca"])
            up = HttpUpstream(tls=ctx, on_handshake=handshakes.append)
            try:
                for _ in range(3):
                    await get(up, site.url)
                return site.resumed
            finally:
                await up.close()

    assert asyncio.run(main()) == 0
    assert handshakes == ["full"] * 3


def test_sessions_are_kept_per_origin(pki: dict[str, Any]) -> None:
    """Two sites on one host: each resumes its own session, never offers the
    other's (which it could not decrypt: a wasted round of the handshake)."""
    handshakes: list[str] = []

    async def main() -> tuple[int, int]:
        async with (
            TlsSite(pki["sites"]["Denver"], pki["ca"], close=True) as denver,
            TlsSite(pki["sites"]["Paris"], pki["ca"], close=True) as paris,
        ):
            up = HttpUpstream(tls=client_context(settings(pki)), on_handshake=handshakes.append)
            try:
                for _ in range(2):
                    await get(up, denver.url)
                    await get(up, paris.url)
                return denver.resumed, paris.resumed
            finally:
                await up.close()

    assert asyncio.run(main()) == (1, 1)
    assert handshakes == ["full", "full", "resumed", "resumed"]


def test_keystone_sessions_verify_and_present_as_the_pool_does(pki: dict[str, Any]) -> None:
    """The gateway's own Keystone calls (service tokens, catalogs, K2K
    exchanges) go to https:// Keystones as every site call does: verified
    against tls.ca, with this gateway's certificate."""
    tls = settings(pki, "Berlin", serve=False)
    auth = {"auth_url": "https://127.0.0.1:1/v3", "username": "scoped", "password": "x",
            "project_name": "service"}  # fmt: skip
    config = parse_config(
        {
            "site": "Berlin",
            "sites": {"Berlin": {}, "Denver": {"auth": auth}},
            "tls": dataclasses.asdict(tls),
        }
    )
    session = Identities(config)._sites["Denver"].session
    assert session.verify == pki["ca"]
    assert session.cert == (tls.cert, tls.key)
    assert TlsSettings().session_options() == {"verify": True, "cert": None}


def test_a_reload_presents_the_renewed_client_certificate_on_the_next_connection(
    tmp_path: Path,
) -> None:
    """``reload_certificates`` (SIGHUP): the pool's context loads its files
    again, and the session made with the old certificate is not resumed (it
    would carry the old identity on)."""
    ca = Authority(tmp_path / "renew")
    berlin = ca.issue("Berlin")

    def reload() -> list[str]:  # this test's contexts (others may be alive)
        return [e for e in reload_certificates() if str(tmp_path) in e]

    denver = ca.issue("Denver")
    ctx = client_context(TlsSettings(berlin.cert, berlin.key, ca.bundle))

    async def main() -> list[bytes]:
        seen: list[bytes] = []
        async with TlsSite(denver, ca.bundle, require_client=True, close=True) as site:
            up = HttpUpstream(tls=ctx)
            try:
                seen.append((await get(up, site.url))[1])
                seen.append((await get(up, site.url))[1])  # resumed: the same identity
                assert site.resumed == 1
                renewed = ca.issue("Berlin-renewed", file_name="Berlin")
                assert renewed == berlin  # the same files
                assert reload() == []
                seen.append((await get(up, site.url))[1])
                assert site.resumed == 1  # a full handshake, with the new certificate
                Path(berlin.cert).write_text("not a certificate")
                [error] = reload()
                assert "tls.cert, tls.key: expected a PEM certificate" in error
                seen.append((await get(up, site.url))[1])  # the last good one stays
            finally:
                await up.close()
        return seen

    assert asyncio.run(main()) == [b"Berlin", b"Berlin", b"Berlin-renewed", b"Berlin-renewed"]
