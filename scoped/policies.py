"""Per-site policies, each a layer over one seam: ``send(SiteCall) -> Reply``.

Like httpx's ``send`` over auth, redirects and the single request, every
call to a site goes through the same stack, outermost first::

    CircuitBreaking   skip a site known down; count what says "not there"
    ServiceTokens     a token validated at another site's Keystone carries
                      this gateway's service token there (renewed on a 401)
    Retrying          a refused connection of a repeatable request, again
    Transport         the :class:`~scoped.upstream.Upstream`: one HTTP exchange

Each layer raises :class:`~scoped.errors.Failure` subclasses and decides on
their properties (``retryable``, ``counts``, ``sent``), never on strings.
The executor sees only the top of the stack.

Each layer also says, in ``shortcut()``, when it would pass a call through
untouched: then a plain GET of a read fan-out may skip the stack's
coroutines (:class:`Shortcut`, :mod:`scoped.fanout`). A layer that does not
say so (any other ``Send``) keeps every call on the stack.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import NamedTuple

from scoped_grammar import Scope, Site, canonical, parse
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from .carry import AUTH_TOKEN, attach, scope_of_token, strip
from .circuit import Circuits, State, status_counts
from .config import Retries, Timeouts
from .errors import CallError, Failure, Skipped
from .federation import Federation, NotIssuedHere
from .http import IDEMPOTENT, Body, header
from .identity import Identities, IdentityError
from .upstream import HttpUpstream, Reply, Upstream


class SiteCall(NamedTuple):
    """One request to one site, addressed and ready to send (a named tuple:
    made on every call, it must cost next to nothing)."""

    site: str
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: Body
    timeouts: Timeouts
    validates_token: bool = False
    """A token validation sent to another site's Keystone (docs/design.md §4)."""


Send = Callable[[SiteCall], Awaitable[Reply]]


class Shortcut(NamedTuple):
    """What a policy stack asks of a plain GET that skips its coroutines
    (:mod:`scoped.fanout`): where to send it, when every layer would pass
    it through untouched (:meth:`passes`), and what a layer counts of its
    outcome (:meth:`settled`). Made once per stack, by its layers."""

    upstream: HttpUpstream
    circuits: Circuits | None = None
    federation: Federation | None = None

    def passes(self, site: str, token: bool) -> bool:
        """Whether a GET to ``site`` (with a user's token, or not) is sent as
        it is: its circuit closed, and no token to exchange for the site's own."""
        circuits = self.circuits
        if circuits is not None and circuits.state(site) is not State.CLOSED:
            return False
        federation = self.federation
        return not (token and federation is not None and federation.federated(site))

    def settled(self, site: str, ok: bool) -> None:
        """The call's outcome: ``ok`` unless it says "not there" (counted
        as :class:`CircuitBreaking` counts it)."""
        if self.circuits is not None:
            self.circuits.record(site, ok)


def shortcut(send: Send) -> Shortcut | None:
    """The stack's :class:`Shortcut`, or None if a layer does not give one."""
    make = getattr(send, "shortcut", None)
    return make() if make is not None else None


class Transport:
    """The bottom of the stack: one exchange over the upstream client."""

    __slots__ = ("upstream",)

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def __call__(self, call: SiteCall) -> Awaitable[Reply]:
        return self.upstream.send(
            call.method, call.url, call.headers, call.body.payload(), call.timeouts
        )

    def shortcut(self) -> Shortcut | None:
        """Only the pooled HTTP client can answer by callback."""
        upstream = self.upstream
        return Shortcut(upstream) if isinstance(upstream, HttpUpstream) else None


class Retrying:
    """A refused connection of an idempotent request is tried again: the site
    surely did nothing, and a restarting service may accept the next one.
    Bounded tries, jittered exponential backoff, within the total timeout;
    never after a timeout (on a cut link that only doubles the wait) nor once
    the request may have been processed."""

    __slots__ = ("circuits", "inner", "retries")

    def __init__(self, inner: Send, retries: Retries, circuits: Circuits) -> None:
        self.inner = inner
        self.retries = retries
        self.circuits = circuits

    async def __call__(self, call: SiteCall) -> Reply:
        try:
            # The first try outside tenacity: the common case pays nothing for it.
            return await self.inner(call)
        except Failure as err:
            if self.retries.attempts < 2 or not _retryable(call, err):
                raise
            got = err
        backoff = self.retries.backoff
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries.attempts - 1)
            | stop_after_delay(call.timeouts.total),
            wait=wait_random_exponential(multiplier=backoff, max=backoff * 8),
            retry=retry_if_exception(lambda e: isinstance(e, Failure) and _retryable(call, e)),
            reraise=True,
        )
        await asyncio.sleep(random.uniform(0, backoff))
        try:
            async for attempt in retrying:
                with attempt:
                    if not self.circuits.allow(call.site):
                        # The circuit opened meanwhile (or holds its one trial,
                        # this call): what the call got stands, and counts.
                        raise _Stop
                    return await self.inner(call)
        except _Stop:
            raise got from None
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def shortcut(self) -> Shortcut | None:
        """Passes it through: only a refused new connection is tried again,
        and a shortcut goes on a kept one (one the site closed meanwhile
        sends the call back through the stack)."""
        return shortcut(self.inner)


class _Stop(Exception):
    """Ends the retries; not a Failure, so tenacity does not retry it."""


def _retryable(call: SiteCall, err: Failure) -> bool:
    return err.retryable and not err.sent and call.method in IDEMPOTENT


class ServiceTokens:
    """A token validation sent to another site's Keystone goes with this
    gateway's service token there: the validating service's own token comes
    from its local Keystone, which that site does not know. Renewed once on
    a 401."""

    __slots__ = ("identities", "inner")

    def __init__(self, inner: Send, identities: Identities) -> None:
        self.inner = inner
        self.identities = identities

    def __call__(self, call: SiteCall) -> Awaitable[Reply]:
        if not call.validates_token or not self.identities.has(call.site):
            return self.inner(call)  # passed through: no coroutine of its own
        return self._validate(call)

    async def _validate(self, call: SiteCall) -> Reply:
        for attempt in (1, 2):
            try:
                token = await self.identities.service_token(call.site)
            except IdentityError as err:
                raise CallError(str(err)) from None
            headers = [(k, v) for k, v in call.headers if k != AUTH_TOKEN]
            headers.append((AUTH_TOKEN, token))
            reply = await self.inner(call._replace(headers=headers))
            if reply.status != 401 or attempt == 2:
                return reply
            reply.release()
            self.identities.invalidate(call.site)
        raise AssertionError("unreachable")  # pragma: no cover

    def shortcut(self) -> Shortcut | None:
        """Passes it through: a token validation never takes the shortcut."""
        return shortcut(self.inner)


class FederatedTokens:
    """A user's token sent to a site whose tokens are federated goes as a
    token of that site's own Keystone (:mod:`scoped.federation`), carrying
    the request's scope with identity at that site, where it was issued.
    A site that refuses it (401) gets a new exchange on the next call.
    A token this site's Keystone does not know, whose scope sends identity
    to the very site called (``<*: Denver>``: its token request went to
    Denver, so it is Denver's own), goes there as it is. The scope alone does
    not say who issued a token: ``<keystone: Denver>`` with a Berlin token
    (the client plugin asks for tokens at home) is exchanged."""

    __slots__ = ("federation", "inner")

    def __init__(self, inner: Send, federation: Federation) -> None:
        self.inner = inner
        self.federation = federation

    def __call__(self, call: SiteCall) -> Awaitable[Reply]:
        if call.validates_token or not self.federation.federated(call.site):
            return self.inner(call)
        token = header(call.headers, AUTH_TOKEN)
        if token is None:
            return self.inner(call)
        return self._as_site(call, token)

    async def _as_site(self, call: SiteCall, token: str) -> Reply:
        bare = strip(token)
        scope = scope_of_token(token)
        try:
            site_token = await self.federation.token_for(call.site, bare)
        except NotIssuedHere as err:
            if scope is not None and issuer(scope) == call.site:
                # <*: Denver> through this gateway: a token of Denver's own
                # (its token request went there), good there as it is.
                return await self.inner(call)
            raise CallError(str(err)) from None
        except IdentityError as err:
            raise CallError(str(err)) from None
        value = attach(site_token, identity_at(scope, call.site)) if scope else site_token
        headers = [(k, value if k == AUTH_TOKEN else v) for k, v in call.headers]
        reply = await self.inner(call._replace(headers=headers))
        if reply.status == 401:
            self.federation.forget(call.site, bare)
        return reply

    def shortcut(self) -> Shortcut | None:
        """Passes a call through unless it carries a token to a federated site."""
        inner = shortcut(self.inner)
        return None if inner is None else inner._replace(federation=self.federation)


@lru_cache(maxsize=4096)
def issuer(scope_text: str) -> str | None:
    """The site whose Keystone issued a token carrying ``scope_text``: the
    one site the scope sends identity to (None: not one site, or none said)."""
    scope = parse(scope_text)
    found = scope.get("identity", scope.default)
    return found.name if isinstance(found, Site) else None


@lru_cache(maxsize=4096)
def identity_at(scope_text: str, site: str) -> str:
    """``scope_text`` with identity at ``site``: a token of that site's
    Keystone is validated there."""
    scope = parse(scope_text)
    entries = [(k, e) for k, e in scope.entries if k != "identity"]
    return canonical(Scope((*entries, ("identity", Site(site)))))


class CircuitBreaking:
    """A site whose circuit is open is not tried (:class:`Skipped`); every
    outcome is counted: a failure that says "not there" (or a 502/503/504
    from a gateway in between) towards opening, anything else closes it."""

    __slots__ = ("circuits", "inner")

    def __init__(self, inner: Send, circuits: Circuits) -> None:
        self.inner = inner
        self.circuits = circuits

    async def __call__(self, call: SiteCall) -> Reply:
        if not self.circuits.allow(call.site):
            raise Skipped("skipped: its circuit is open (it failed recently)")
        if self.circuits.state(call.site) is State.HALF_OPEN:
            # The trial of a site that failed: its answer must begin within
            # the connect timeout. A user's request never waits the total
            # timeout (60 s) for a site that went silent; a site that is only
            # slow stays open until a health probe (full timeouts) hears it.
            t = call.timeouts
            call = call._replace(timeouts=Timeouts(t.connect, min(t.total, t.connect)))
        try:
            reply = await self.inner(call)
        except Failure as err:
            self.circuits.record(call.site, not err.counts)
            raise
        self.circuits.record(call.site, not status_counts(reply.status))
        return reply

    def shortcut(self) -> Shortcut | None:
        """Passes a call to a closed circuit through, and counts its outcome."""
        inner = shortcut(self.inner)
        return None if inner is None else inner._replace(circuits=self.circuits)


def policy_stack(
    upstream: Upstream,
    circuits: Circuits,
    retries: Retries,
    identities: Identities | None = None,
    federation: Federation | None = None,
) -> Send:
    """The stack every site call goes through, outermost first."""
    send: Send = Transport(upstream)
    if retries.attempts > 1:
        send = Retrying(send, retries, circuits)
    if federation is not None and federation.sites():
        send = FederatedTokens(send, federation)
    if identities is not None and identities.sites():
        send = ServiceTokens(send, identities)
    return CircuitBreaking(send, circuits)
