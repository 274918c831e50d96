"""A token of every site for a user's token: Keystone-to-Keystone federation
(docs/design.md §4, independent sites).

Independent Keystones have their own IDs and trust only their own tokens.
For a site whose ``tokens.mode`` is ``federated``, a request carrying a
user's token goes there with a token of that site's Keystone instead,
obtained from this site's Keystone (the token's issuer, an identity
provider) with keystoneauth1's ``Keystone2Keystone`` plugin (SAML2 ECP: the
assertion from here, presented to the site as a service provider, then
scoped to the site's own project).

An exchange costs ~300-370 ms on the lab; it is made once per (user token,
site) and cached until shortly before the site token expires. The cache is
keyed by a digest of the user's token, never the token itself; a site's
token is only ever sent to that site. The home token revoked: a cached site
token stays good until it expires (revocation does not cross Keystones), and
a new exchange is refused. keystoneauth1 is synchronous: exchanges run in a
worker thread, one at a time per (token, site).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from keystoneauth1 import access as ks_access
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import access as v3_access
from keystoneauth1.identity import v3

from .config import SiteTokens, Timeouts, TlsSettings
from .errors import CallError, Refused, TimedOut
from .identity import IdentityError

MARGIN = 60.0
"""Seconds before its expiry a cached site token is exchanged anew."""
MAX_CACHED = 10_000
"""Site tokens kept (least recently used dropped first)."""
UNKNOWN_FOR = 60.0
"""Seconds a token this site's Keystone did not know is taken as unknown
without asking again (a ``<*: Denver>`` client's every call would ask)."""


@dataclass(frozen=True, slots=True)
class SiteToken:
    token: str
    expires_at: float
    """Wall-clock seconds (``time.time()``)."""


class NotIssuedHere(IdentityError):
    """This site's Keystone does not know the token: another Keystone issued
    it (or it expired, or was revoked)."""


Exchange = Callable[[str, str], SiteToken]
"""``(site, user_token) -> SiteToken``, synchronous (run in a thread)."""


class Federation:
    """Site tokens for user tokens, for the sites configured ``federated``."""

    def __init__(
        self,
        local: str,
        home_auth_url: str,
        sites: Mapping[str, SiteTokens],
        timeouts: Mapping[str, Timeouts],
        clock: Callable[[], float] = time.time,
        tls: TlsSettings | None = None,
    ) -> None:
        self.local = local
        self.home_auth_url = home_auth_url
        self._home = urlsplit(home_auth_url).netloc
        self._sites = {name: t for name, t in sites.items() if t.federated and name != local}
        self.timeouts = timeouts
        """Each site's: an exchange talks to its Keystone across the same link."""
        self._clock = clock
        self._tls = (tls or TlsSettings()).session_options()
        self._cache: OrderedDict[tuple[bytes, str], SiteToken] = OrderedDict()
        self._pending: dict[tuple[bytes, str], asyncio.Future[SiteToken]] = {}
        self._unknown: OrderedDict[bytes, float] = OrderedDict()
        """Digests of tokens this site's Keystone did not know, until when."""
        self.exchanges = 0
        """Exchanges made (for tests and metrics)."""
        self.observe: Callable[[str, bool], None] | None = None
        """Told of every exchange: (site, it succeeded)."""

    @property
    def _not_issued(self) -> str:
        return (
            f"{self.local}'s Keystone refused the token (expired or revoked), "
            "so no token of another site can be had for it"
        )

    def federated(self, site: str) -> bool:
        return site in self._sites

    def sites(self) -> list[str]:
        return list(self._sites)

    async def token_for(self, site: str, user_token: str) -> str:
        """``site``'s token for the holder of ``user_token`` (cached)."""
        digest = hashlib.sha256(user_token.encode()).digest()
        unknown_until = self._unknown.get(digest)
        if unknown_until is not None and unknown_until > self._clock():
            raise NotIssuedHere(self._not_issued)
        key = (digest, site)
        cached = self._cache.get(key)
        if cached is not None and cached.expires_at - MARGIN > self._clock():
            self._cache.move_to_end(key)
            return cached.token
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._exchange(key, site, user_token))
            pending.add_done_callback(_retrieved)
            self._pending[key] = pending
        # Shielded: a request cancelled meanwhile (a sibling of a strict &
        # failed) leaves the exchange to finish and be cached, instead of
        # throwing away a token that costs four round trips.
        return (await asyncio.shield(pending)).token

    async def _exchange(self, key: tuple[bytes, str], site: str, user_token: str) -> SiteToken:
        try:
            got = await asyncio.to_thread(self.exchange, site, user_token)
        except NotIssuedHere:
            # Not an exchange: another Keystone's token (or a dead one).
            self._unknown[key[0]] = self._clock() + UNKNOWN_FOR
            if len(self._unknown) > MAX_CACHED:
                self._unknown.popitem(last=False)
            raise
        except BaseException:
            if self.observe is not None:
                self.observe(site, False)
            raise
        finally:
            del self._pending[key]
        self.exchanges += 1
        if self.observe is not None:
            self.observe(site, True)
        self._cache[key] = got
        if len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return got

    def forget(self, site: str, user_token: str) -> None:
        """Drop a site token the site refused (401): the next call exchanges anew."""
        self._cache.pop((hashlib.sha256(user_token.encode()).digest(), site), None)

    def exchange(self, site: str, user_token: str) -> SiteToken:
        """One Keystone-to-Keystone exchange (blocking).

        The user's own token vouches for them: it is read at this site's
        Keystone (a user may read their own token; it lists the service
        providers) and used as it is, since Keystone makes an assertion
        only from a project-scoped token (deploy/k2k-probe/REPORT.md).
        """
        conf = self._sites[site]
        sp = conf.service_provider or site
        session = ks_session.Session(**self._tls)
        # requests' (connect, read) pair, which Session(timeout=) cannot take:
        # a black-holed site costs one connect timeout, as any call to it.
        t = self.timeouts.get(site, Timeouts())
        session.timeout = (t.connect, t.total)  # type: ignore[assignment]
        started = time.monotonic()
        try:
            ref = self._read(session, user_token)
            home = v3_access.AccessInfoPlugin(ref, self.home_auth_url)
            if home.get_sp_auth_url(session, sp) is None:
                raise IdentityError(
                    f"{self.local}'s Keystone has no service provider {sp!r}, so it cannot "
                    f"vouch for this user at {site} (register it there: openstack service "
                    f"provider create {sp} --auth-url ... --service-provider-url ...)"
                )
            project, domain = _project_at(conf, ref)
            k2k = v3.Keystone2Keystone(home, sp, project_name=project, project_domain_name=domain)
            access = k2k.get_access(session)
        except ks_exceptions.ConnectionError as err:
            raise self._unreachable(site, err, time.monotonic() - started) from None
        except ks_exceptions.ClientException as err:
            project = (
                f"project {conf.project_name!r}" if conf.project_name else "the user's own project"
            )
            raise IdentityError(
                f"cannot get a token of {site} for this user from {self.local}'s Keystone "
                f"(Keystone-to-Keystone, service provider {sp!r}, {project}): {err}"
            ) from None
        expires = access.expires
        token = access.auth_token
        if token is None or expires is None:
            raise IdentityError(f"{site}'s Keystone gave no token in the K2K exchange")
        return SiteToken(token, expires.timestamp())

    def _unreachable(
        self, site: str, err: ks_exceptions.ConnectionError, waited: float
    ) -> Exception:
        """The failure of an exchange that could not reach a Keystone: the
        site's (a failure of that site, of the kind any call reports, which
        its circuit counts), or this site's own."""
        if self._home in str(err):
            return IdentityError(f"{self.local}'s Keystone, asked for a token of {site}: {err}")
        what = "its Keystone, for a token of its own (Keystone-to-Keystone)"
        if isinstance(err, ks_exceptions.ConnectFailure):
            return Refused(f"{what}: {err}")
        if not isinstance(err, ks_exceptions.ConnectTimeout):
            return CallError(f"{what}: {err}", sent=True)
        # keystoneauth says "timed out" for the connect and the read alike.
        t = self.timeouts.get(site, Timeouts())
        if waited < t.total:
            return TimedOut(f"no connection within the connect timeout ({t.connect:g} s) to {what}")
        return TimedOut(f"{what} stayed silent for {t.total:g} s", sent=True)

    def _read(self, session: ks_session.Session, user_token: str) -> ks_access.AccessInfo:
        """The user's token as this site's Keystone knows it."""
        resp = session.get(
            f"{self.home_auth_url}/auth/tokens",
            headers={"X-Auth-Token": user_token, "X-Subject-Token": user_token},
            authenticated=False,
            raise_exc=False,
        )
        if resp.status_code in (401, 403, 404):
            raise NotIssuedHere(self._not_issued)
        if not resp.ok:
            raise IdentityError(
                f"cannot read the token at {self.local}'s Keystone: {resp.status_code}"
            )
        auth_ref = ks_access.create(resp=resp)
        if not auth_ref.project_scoped:
            raise IdentityError(
                "a token of another site can only be had for a project-scoped token "
                "(Keystone asserts the user's project); this one is not"
            )
        return auth_ref


def _retrieved(task: asyncio.Future[SiteToken]) -> None:
    """An exchange's failure is retrieved even when nobody waits for it any
    more (no "exception was never retrieved" in the log)."""
    if not task.cancelled():
        task.exception()


def _project_at(conf: SiteTokens, ref: ks_access.AccessInfo) -> tuple[str | None, str | None]:
    """The project (name, domain name) the site token is scoped to: the
    configured one, else the user's own project by name."""
    if conf.project_name is not None:
        return conf.project_name, conf.project_domain_name or "Default"
    return ref.project_name, ref.project_domain_name
