"""Scopes for any keystoneauth1 client: a session or an adapter that carries one.

Every OpenStack client library (novaclient, glanceclient, keystoneclient, an
openstacksdk ``Connection``...) accepts a keystoneauth1 ``Session`` or
``Adapter``; one made here sends ``X-Scope`` and the ``!scope!`` token suffix
with every authenticated request, and authenticates at home, untouched.
"""

from __future__ import annotations

import copy
from typing import Any

from keystoneauth1 import adapter as ksa_adapter
from keystoneauth1 import plugin as ksa_plugin
from keystoneauth1 import session as ksa_session

from .auth import install, scoped_auth
from .scope import ClientScope, ScopeLike, resolve, setting_of


def client_scope(
    scope: ScopeLike | ClientScope, home: str | None = None, origin: str = "scope argument"
) -> ClientScope:
    """``scope`` parsed and completed with ``home``; raises ``ScopeError`` if it is bad."""
    if isinstance(scope, ClientScope):
        return scope if home is None else scope.with_home(home)
    resolved = resolve(setting_of(scope, origin), home)
    if resolved is None:  # pragma: no cover - setting_of never gives None
        raise ValueError("no scope")
    return resolved


def scoped_session(
    session_or_auth: ksa_session.Session | ksa_plugin.BaseAuthPlugin,
    scope: ScopeLike | ClientScope,
    home: str | None = None,
    **session_kwargs: Any,
) -> ksa_session.Session:
    """A keystoneauth1 session whose authenticated requests carry ``scope``.

    Given an auth plugin, a new ``Session(auth=..., **session_kwargs)``. Given a
    session, a copy of it sharing its connection pool, settings and discovery
    cache, but with its own (scoped) auth plugin; the session passed in is left
    as it was, so unscoped and scoped clients can share one pool. ``home`` is the
    client's home site (its region); ``*: home`` is added unless the scope has a
    ``*`` key. A bad scope raises ``ScopeError`` here, before any request.
    """
    resolved = client_scope(scope, home)
    if isinstance(session_or_auth, ksa_session.Session):
        if session_kwargs:
            raise TypeError("session keyword arguments apply only when an auth plugin is given")
        scoped = copy.copy(session_or_auth)
        # The copy must never close the pool it shares (keystoneauth closes the
        # requests session it owns when it is garbage collected).
        scoped._session = None
        install(scoped, resolved)
        return scoped
    return ksa_session.Session(auth=scoped_auth(session_or_auth, resolved), **session_kwargs)


class ScopedAdapter(ksa_adapter.Adapter):
    """A keystoneauth1 ``Adapter`` whose authenticated requests carry a scope.

    Takes the ``Adapter`` arguments (``service_type``, ``interface``,
    ``region_name``, ...) plus ``scope`` and ``home``; the adapter's auth
    plugin (``auth=``, else the session's) is wrapped, the session untouched.
    """

    def __init__(
        self,
        session: ksa_session.Session,
        *,
        scope: ScopeLike | ClientScope,
        home: str | None = None,
        **kwargs: Any,
    ) -> None:
        auth = kwargs.pop("auth", None) or session.auth
        if auth is None:
            raise ValueError("a scope rides on a token: give an auth plugin or a session with one")
        self.scope = client_scope(scope, home)
        super().__init__(session, auth=scoped_auth(auth, self.scope), **kwargs)
