"""The hook that carries a scope: a keystoneauth1 auth plugin wrapping the real one.

keystoneauth1 asks the session's auth plugin for headers (``get_headers``) on
every *authenticated* request, and on no other: the token request itself
(``POST /v3/auth/tokens``) and version discovery are sent with
``authenticated=False``. That is exactly the rule docs/design.md §4 needs: the
scope rides with the token, so every request that carries a token carries
``X-Scope`` and the ``!scope!`` suffix, and the request that obtains the token
reaches the home Keystone untouched. Session-wide ``additional_headers``
would also stamp the token request, and patching ``requests`` would stamp
everything in the process.

:class:`ScopedAuth` delegates everything else (authentication, the catalog,
endpoint discovery, re-authentication on 401, caching) to the plugin it
wraps, so the wrapped plugin's state stays the single truth.
:class:`ScopedIdentityAuth` is the same for Keystone plugins, and is a
``BaseIdentityPlugin``, because openstacksdk checks that type before it reads
the catalog through ``session.auth``.
"""

from __future__ import annotations

import abc
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from keystoneauth1 import plugin as ksa_plugin
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import base as ksa_identity

from .scope import ClientScope

LOG = logging.getLogger("scoped_osc")

_OWN = frozenset({"_scoped_auth", "_scoped_scope", "_scoped_lock", "_scoped_settled"})


class ScopedAuth(ksa_plugin.BaseAuthPlugin):
    """An auth plugin that adds a scope to the headers of the plugin it wraps."""

    _scoped_auth: ksa_plugin.BaseAuthPlugin
    _scoped_scope: ClientScope
    _scoped_lock: threading.Lock
    _scoped_settled: bool

    def __init__(self, auth: ksa_plugin.BaseAuthPlugin, scope: ClientScope) -> None:
        # BaseAuthPlugin.__init__ is not called on purpose: its state (the
        # discovery cache) belongs to the wrapped plugin, reached by __getattr__.
        object.__setattr__(self, "_scoped_auth", auth)
        object.__setattr__(self, "_scoped_scope", scope)
        object.__setattr__(self, "_scoped_lock", threading.Lock())
        # A complete scope (it has a '*' entry) never needs the catalog.
        object.__setattr__(self, "_scoped_settled", scope.is_complete)

    @property
    def auth(self) -> ksa_plugin.BaseAuthPlugin:
        """The wrapped plugin."""
        return self._scoped_auth

    @property
    def scope(self) -> ClientScope:
        """The scope sent (its home filled in once known)."""
        return self._scoped_scope

    def get_headers(self, session: ksa_session.Session, **kwargs: Any) -> dict[str, str] | None:
        """The wrapped plugin's headers, with the token suffixed and ``X-Scope`` set."""
        headers = self._scoped_auth.get_headers(session, **kwargs)
        if headers is None:
            return None  # keystoneauth reads None as "not authenticated": keep it
        return self._scope_for(session).apply(headers)

    def _scope_for(self, session: ksa_session.Session) -> ClientScope:
        """The scope, its home looked up in the catalog once if none was configured."""
        if not self._scoped_settled:
            with self._scoped_lock:
                if not self._scoped_settled:
                    self._settle(session)
        return self._scoped_scope

    def _settle(self, session: ksa_session.Session) -> None:
        scope = self._scoped_scope
        home = home_from_catalog(self._scoped_auth, session)
        if home is None:
            LOG.warning(
                "no home site for the scope %s: set --os-region-name (OS_REGION_NAME) so "
                "that the services it does not name stay at home; until then the first "
                "gateway reached completes it with its own site",
                scope.text,
            )
        else:
            scope = scope.with_home(home)
            LOG.debug("home site %r, from the catalog: scope %s", home, scope.text)
        object.__setattr__(self, "_scoped_scope", scope)
        object.__setattr__(self, "_scoped_settled", True)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: the wrapped plugin's attributes
        # (auth_url, auth_ref, reauthenticate, ...) are its own, not copies.
        if name in _OWN:
            raise AttributeError(name)
        return getattr(self._scoped_auth, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # ``session.auth.auth_ref = ...`` (osc-lib does this) must reach the
        # wrapped plugin, or the two would disagree on the token.
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._scoped_auth, name, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._scoped_auth!r}, scope={self._scoped_scope.text!r})"


class ScopedIdentityAuth(ScopedAuth, ksa_identity.BaseIdentityPlugin):
    """:class:`ScopedAuth` for a Keystone plugin: also a ``BaseIdentityPlugin``."""

    def get_auth_ref(self, session: ksa_session.Session) -> Any:
        """The wrapped plugin authenticates (the token request is its own, unscoped)."""
        return self._scoped_auth.get_auth_ref(session)


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: ScopedAuth, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._scoped_auth, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The wrapped plugin's ``{name}``."
    return method


def _delegate_all(cls: type[ScopedAuth], base: type[Any]) -> None:
    """Make every method ``base`` defines (bar those ``cls`` overrides) call the
    wrapped plugin's, so the inherited implementations never run on the
    wrapper's empty state. Derived from keystoneauth1's own classes, so a
    method a later version adds is delegated too."""
    for klass in base.__mro__:
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if name.startswith("__") or not inspect.isfunction(value):
                continue
            if name in cls.__dict__ or name in ScopedAuth.__dict__:
                continue
            setattr(cls, name, _delegate(name))
    abc.update_abstractmethods(cls)


_delegate_all(ScopedAuth, ksa_plugin.BaseAuthPlugin)
_delegate_all(ScopedIdentityAuth, ksa_identity.BaseIdentityPlugin)


def scoped_auth(auth: ksa_plugin.BaseAuthPlugin, scope: ClientScope) -> ScopedAuth:
    """``auth`` carrying ``scope``; a plugin already wrapped is re-wrapped, not nested."""
    if isinstance(auth, ScopedAuth):
        auth = auth.auth
    if isinstance(auth, ksa_identity.BaseIdentityPlugin):
        return ScopedIdentityAuth(auth, scope)
    return ScopedAuth(auth, scope)


def install(session: ksa_session.Session, scope: ClientScope) -> ScopedAuth:
    """Make every authenticated request of ``session`` carry ``scope``.

    The session's auth plugin is wrapped in place; every client built on the
    session (an openstacksdk ``Connection``, keystoneclient, the clients of
    python-openstackclient) goes through it.
    """
    if session.auth is None:
        raise ValueError("a scope rides on a token: the session has no auth plugin")
    wrapped = scoped_auth(session.auth, scope)
    session.auth = wrapped
    LOG.debug("requests carry X-Scope: %s (%s)", scope.header, scope.origin)
    return wrapped


def home_from_catalog(auth: ksa_plugin.BaseAuthPlugin, session: ksa_session.Session) -> str | None:
    """The home site when no region is configured: the region of the Keystone
    the client authenticated with (the site its requests first reach), from the
    token's catalog; else the catalog's only region; else None."""
    get_access = getattr(auth, "get_access", None)
    if get_access is None:
        return None
    try:
        catalog = get_access(session).service_catalog
        endpoints = catalog.get_endpoints()
    except Exception as err:  # best effort: the scope then goes as given
        LOG.debug("no catalog to find the home site in: %s", err)
        return None
    regions: set[str] = set()
    auth_url = str(getattr(auth, "auth_url", "") or "")
    for service_type, entries in endpoints.items():
        for entry in entries:
            region = entry.get("region_id") or entry.get("region")
            if not region:
                continue
            regions.add(region)
            url = str(entry.get("url") or "")
            if service_type == "identity" and url and _same_root(auth_url, url):
                return str(region)
    return regions.pop() if len(regions) == 1 else None


def _same_root(auth_url: str, endpoint: str) -> bool:
    a, e = urlsplit(auth_url), urlsplit(endpoint)
    return (a.scheme, a.netloc) == (e.scheme, e.netloc) and (a.path.rstrip("/") + "/").startswith(
        e.path.rstrip("/") + "/"
    )
