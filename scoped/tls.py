"""TLS where a request crosses a site boundary (docs/design.md §4, §8).

Three things, all decided here so that the front ends stay thin:

- the **client context** of the upstream pool: ``https://`` sites are
  verified against the federation's CA bundle (``tls.ca``; the system's CAs
  only when none is given), this gateway's certificate is presented as a
  client certificate (mutual TLS), and TLS sessions are resumed per origin
  (:class:`ResumingContext`);
- the **server context** check: the files ``scoped gateway`` hands to its
  server are loaded here first, so a bad file is a clear error at start;
- **a certificate renewed without a restart**: every context built here
  (and the server's, handed in with :func:`track`) can load its files again
  (:func:`reload_certificates`, on SIGHUP in ``scoped gateway``);
- **who may send the hop header**: the front end hands in the peer as its
  server verified it (:class:`Peer`, the subject of the client certificate);
  :func:`hop_refusal` says whether a request marked as forwarded by another
  site is honoured.
"""

from __future__ import annotations

import contextvars
import re
import ssl
import time
import weakref
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from .carry import HOP_HEADER
from .config import TlsSettings
from .errors import ConfigError


class _Resumable(Protocol):
    """Where a connection's TLS session is kept between connections (an origin)."""

    session: ssl.SSLSession | None


RESUME: contextvars.ContextVar[_Resumable | None] = contextvars.ContextVar(
    "scoped_tls_resume", default=None
)
"""The origin a connection is being opened to, set by the upstream pool
around ``create_connection``: asyncio and uvloop create the TLS object
(``wrap_bio``) deep inside it, with no way to pass a session in, but in the
caller's context."""


class ResumingContext(ssl.SSLContext):
    """A client context that offers the last session of the origin being
    connected to (:data:`RESUME`), so a new connection to a site resumes
    (an abbreviated handshake, no certificate exchange or signatures)
    instead of a full handshake. Python's asyncio never resumes on its own.
    Measured by ``tests/bench/bench_gateway.py --tls``. A session made
    before the certificates were last reloaded is not offered: it would
    carry the old client certificate's identity on."""

    reloaded = 0
    """When the files were last reloaded (whole seconds, as ``SSLSession.time``)."""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if session is None and not server_side:
            origin = RESUME.get()
            offered = origin.session if origin is not None else None
            if offered is not None and offered.time > self.reloaded:
                session = offered
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def client_context(settings: TlsSettings, source: str = "<config>") -> ResumingContext:
    """The upstream pool's context: verify sites against ``tls.ca`` (else the
    system's CAs, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), present
    ``tls.cert`` when given. A file that cannot be loaded is a
    :class:`ConfigError` naming the key."""
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names
    if settings.ca is not None:
        _load(source, "tls.ca", "a PEM bundle of CA certificates", ctx.load_verify_locations,
              settings.ca)  # fmt: skip
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if settings.cert is not None:
        _load_chain(ctx, settings, source)
    track(ctx, settings, source)
    return ctx


def server_context(settings: TlsSettings, source: str = "<config>") -> ssl.SSLContext | None:
    """The context a server would build from ``tls`` (None: plain HTTP).

    ``scoped gateway`` builds it before starting its server only to check the
    files, so that a bad certificate, key or bundle is a clear error naming
    the key rather than a server's traceback. Client certificates are asked
    for and verified against ``tls.ca``: required with
    ``require_client_cert``, optional otherwise (a user's client has none).
    """
    if not settings.serving:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(ctx, settings, source)
    assert settings.ca is not None  # the config requires it with cert
    _load(source, "tls.ca", "a PEM bundle of CA certificates", ctx.load_verify_locations,
          settings.ca)  # fmt: skip
    ctx.verify_mode = client_cert_mode(settings)
    return ctx


def client_cert_mode(settings: TlsSettings) -> ssl.VerifyMode:
    """Whether a server asks for client certificates: always when serving
    HTTPS (a peer gateway's names it), required only if configured."""
    return ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL


def _load_chain(ctx: ssl.SSLContext, settings: TlsSettings, source: str) -> None:
    assert settings.cert is not None and settings.key is not None
    for key, path in (("tls.cert", settings.cert), ("tls.key", settings.key)):
        _readable(source, key, path)  # OpenSSL's error would not say which file
    try:
        ctx.load_cert_chain(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            f"{source}: tls.cert, tls.key: expected a PEM certificate ({settings.cert!r}) "
            f"and its private key ({settings.key!r}); loading them failed ({_reason(err)})"
        ) from None


def _readable(source: str, key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise ConfigError(f"{source}: {key}: cannot read {path!r} ({err.strerror})") from None


def _load(source: str, key: str, expected: str, load: Any, path: str) -> None:
    _readable(source, key, path)
    try:
        load(path)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            f"{source}: {key}: expected {expected}, {path!r} is not one ({_reason(err)})"
        ) from None


def _reason(err: OSError | ssl.SSLError) -> str:
    if isinstance(err, ssl.SSLError) and err.reason:
        return str(err.reason).lower().replace("_", " ")
    return err.strerror or str(err)


# -- certificates renewed while serving ------------------------------------

_LIVE: weakref.WeakKeyDictionary[ssl.SSLContext, tuple[TlsSettings, str]] = (
    weakref.WeakKeyDictionary()
)
"""Every context in use, with the settings it was loaded from."""


def track(ctx: ssl.SSLContext, settings: TlsSettings, source: str) -> None:
    """Reload ``ctx`` too when certificates are reloaded (a server's own
    context, built by the server from the same files)."""
    _LIVE[ctx] = (settings, source)


def reload_certificates() -> list[str]:
    """Load every live context's certificate, key and CA bundle again, from
    the same paths: a renewed certificate (or a CA added to the bundle) is
    used by the next handshake, and no connection is dropped (established
    ones keep what they negotiated; resumed sessions keep the identity they
    were made with until they expire). A pair that does not load, or whose
    key does not match, is tried on a scratch context first and changes
    nothing: the old certificate stays in use. What went wrong, each error
    once (the server's and the pool's context share the files; empty: every
    context reloaded)."""
    errors: list[str] = []
    for ctx, (settings, source) in list(_LIVE.items()):
        try:
            if settings.cert is not None:
                _load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), settings, source)
                _load_chain(ctx, settings, source)
            if settings.ca is not None:
                _load(source, "tls.ca", "a PEM bundle of CA certificates",
                      ctx.load_verify_locations, settings.ca)  # fmt: skip
            if isinstance(ctx, ResumingContext):
                ctx.reloaded = int(time.time())
        except ConfigError as err:
            errors.append(str(err))
    return list(dict.fromkeys(errors))


def tracked() -> int:
    """How many contexts a reload reaches."""
    return len(_LIVE)


# -- who sent a request: the hop header's trust ---------------------------


@dataclass(frozen=True)
class Peer:
    """The other end of a request's connection, as its server verified it.

    Handed in by the front end: ``tls`` whether the connection is TLS,
    ``subject`` the RFC 4514 subject of the client certificate the server
    verified against ``tls.ca`` (None: none was presented, or it did not
    verify), as the ASGI TLS extension gives it (``client_cert_name``)."""

    tls: bool = False
    subject: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The certificate's subject common names (a site's is its name)."""
        return common_names(self.subject) if self.subject else ()


NO_PEER = Peer()
"""A front end that knows nothing of the connection (plain HTTP, WSGI)."""


def hop_refusal(
    peer: Peer | None, hop_origin: str | None, sites: Collection[str], serving: bool
) -> str | None:
    """Why a request carrying the hop header is not honoured, or None.

    A gateway that serves HTTPS (``tls.cert``) honours the hop only from a
    peer whose verified client certificate's subject CN is the name of a site
    of its registry, the site the hop says the request comes from. A gateway
    on plain HTTP trusts the hop as it comes (labs, loopback: anyone who can
    reach it can claim to be a site). The mark skips planning (the request
    is served here and never forwarded again), so from anyone else it is
    refused, never quietly planned again: a peer gateway that lost its
    certificate would otherwise loop its requests back and forth.
    """
    if not serving:
        return None
    expected = (
        f"the {HOP_HEADER} header (a request forwarded by another site) is honoured only "
        "from a gateway of the federation: expected a client certificate, verified "
        "against this gateway's tls.ca, whose subject CN is the name of a site of its "
        f"registry ({_some(sites)})"
    )
    names = peer.names if peer is not None else ()
    if not names:
        if peer is None or not peer.tls:
            return f"{expected}; this request came over plain HTTP"
        return f"{expected}; this connection presented none"
    known = [n for n in names if n in sites]
    if not known:
        return f"{expected}; this connection's certificate names {_some(names)}"
    if hop_origin is not None and hop_origin not in known:
        return (
            f"the {HOP_HEADER} header says this request comes from site {hop_origin!r}, "
            f"but the connection's certificate names {_some(known)}"
        )
    return None


def _some(names: Collection[str], most: int = 8) -> str:
    shown = [repr(n) for n in list(names)[:most]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


_RDN = re.compile(r"(?:[^,+\\]|\\.)+")
_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2}|.)")
_CN = ("cn", "commonname", "2.5.4.3")


@lru_cache(maxsize=1024)
def common_names(subject: str) -> tuple[str, ...]:
    """The common names (CN) of an RFC 4514 distinguished name, unescaped.

    ``CN=Berlin,O=scoped`` -> ``("Berlin",)``. Kept to what RFC 4514 allows
    a server to write: ``,`` between RDNs, ``+`` inside one, ``\\X`` and
    ``\\HH`` escapes; a ``#``-hex (BER) value is not a name and is skipped."""
    out: list[str] = []
    for part in _RDN.findall(subject):
        kind, sep, value = part.partition("=")
        if not sep or kind.strip().lower() not in _CN or value.startswith("#"):
            continue
        out.append(_unescape(value))  # an edge space is escaped (RFC 4514 §2.4)
    return tuple(out)


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    raw = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(value):
        raw += value[pos : m.start()].encode("utf-8")
        esc = m.group(1)
        raw += bytes.fromhex(esc) if len(esc) == 2 else esc.encode("utf-8")
        pos = m.end()
    raw += value[pos:].encode("utf-8")
    return raw.decode("utf-8", errors="replace")
