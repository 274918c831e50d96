"""The scope a client sends: where it was set, how it is completed, how it travels.

docs/design.md §2 "Default scope": every request has a complete scope. A service
the user's scope does not name is bound to the client's *home* site (its
region: ``--os-region-name``, ``OS_REGION_NAME`` or the cloud's ``region_name``)
by adding ``*: <home>``, unless the scope already has a ``*`` key. The scope is
completed on the client, not left to the first gateway, because it rides on
the token (§4, §8): when Nova in Denver calls Glance with the user's token, the
gateway there must read "Glance at the user's home", not "Glance here".

Parsing goes through :mod:`scoped_grammar` (the same parser as the gateway)
and the token suffix through :mod:`scoped.carry`; nothing here re-implements
the language or the carriage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scoped_grammar import STAR, Scope, ScopeError, Site, canonical, parse

from scoped import carry
from scoped.carry import SUFFIX, attach, encode_scope
from scoped.plan import plan_scope

from .registry import known_for
from .setting import CONFIG_KEY, ScopeSetting, setting_from_config

SCOPE_HEADER = carry.SCOPE_HEADER.title()
"""``X-Scope``: the canonical scope of a request (docs/design.md §4), in the
casing keystoneauth's own headers use."""

TOKEN_HEADER = carry.AUTH_TOKEN.title()

ScopeLike = str | Scope | Mapping[str, str]
"""What callers may pass as a scope: text in any surface form, a parsed
:class:`~scoped_grammar.Scope`, or a mapping of service to site expression
(the JSON form, as a clouds.yaml mapping reads)."""


class ScopeSettingError(ScopeError):
    """A configured scope that cannot be used: the grammar's error, and where it was set.

    A :class:`~scoped_grammar.ScopeError`, so callers catch one type; its text
    starts with the origin (``--os-scope: bad scope at line 1, column 8: ...``)
    and keeps the caret under the fault.
    """

    def __init__(self, origin: str, error: ScopeError) -> None:
        self.origin = origin
        self.error = error
        super().__init__(error.message, error.text, error.pos)

    def render(self) -> str:
        return f"{self.origin}: {super().render()}"


def setting_of(scope: ScopeLike, origin: str) -> ScopeSetting:
    """A scope given in code (``connect(scope=...)``), as a setting."""
    if isinstance(scope, Scope):
        return ScopeSetting(canonical(scope), origin)
    if isinstance(scope, Mapping):
        setting = setting_from_config(scope)
        return ScopeSetting(setting.text if setting else "", origin)
    return ScopeSetting(scope, origin)


def complete(scope: Scope, home: str | None) -> Scope:
    """``scope`` with every unnamed service bound to ``home`` (``*: home`` added).

    Unchanged if the scope has a ``*`` key (the user said where the rest goes)
    or no home is known (the first gateway reached then completes it with its
    own site, as docs/design.md §2 says).
    """
    if home is None or STAR in scope:
        return scope
    return Scope.of({**dict(scope.entries), STAR: Site(home)})


# A token of canonical text that may name a site: a JSON string or a bare name.
_SITE_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s<>{}:,|&?()*"]+')


def header_text(scope: Scope) -> str:
    """The canonical text of ``scope`` as an HTTP header value: ASCII only.

    Canonical text writes a site name as it is (``Zürich``, ``"東京"``), but a
    header value must be ASCII to reach the gateway intact (``requests`` sends
    Latin-1, and fails beyond it). Non-ASCII names are written as JSON strings
    with ``\\u`` escapes, which parse to the very same scope; ASCII scopes, the
    usual case, are their canonical text exactly.
    """
    text = canonical(scope)
    return text if text.isascii() else _SITE_TOKEN.sub(_ascii_token, text)


def _ascii_token(match: re.Match[str]) -> str:
    token = match.group(0)
    if token.isascii():
        return token
    name = json.loads(token) if token.startswith('"') else token
    return json.dumps(name, ensure_ascii=True)


@dataclass(frozen=True)
class ClientScope:
    """The scope one client sends with every authenticated request.

    ``scope`` is what the user gave, ``home`` the client's home site (None if
    not known yet), ``origin`` where the scope was set.
    """

    scope: Scope
    home: str | None = None
    origin: str = "scope"
    completed: Scope = field(init=False, repr=False, compare=False)
    text: str = field(init=False, repr=False, compare=False)
    """Canonical text of the completed scope: what the token suffix encodes."""
    header: str = field(init=False, repr=False, compare=False)
    """The ``X-Scope`` value: :attr:`text`, ASCII-safe."""

    def __post_init__(self) -> None:
        # Computed once: these go on every request.
        completed = complete(self.scope, self.home)
        object.__setattr__(self, "completed", completed)
        object.__setattr__(self, "text", canonical(completed))
        object.__setattr__(self, "header", header_text(completed))

    @property
    def is_complete(self) -> bool:
        """True if every service has a site (the scope has a ``*`` entry)."""
        return STAR in self.completed

    @property
    def token_suffix(self) -> str:
        """What is appended to the token: ``!scope!<unpadded base64url>``."""
        return SUFFIX + encode_scope(self.text)

    def with_home(self, home: str | None) -> ClientScope:
        return ClientScope(self.scope, home, self.origin)

    def apply(self, headers: Mapping[str, str]) -> dict[str, str]:
        """``headers`` of an authenticated request, carrying this scope.

        The token gets the suffix (any earlier one replaced) and ``X-Scope``
        is set; every other header is left as it is.
        """
        out = dict(headers)
        for name, value in headers.items():
            if name.lower() == TOKEN_HEADER.lower() and value:
                out[name] = attach(value, self.text)
            elif name.lower() == SCOPE_HEADER.lower():
                del out[name]
        out[SCOPE_HEADER] = self.header
        return out


def resolve(
    setting: ScopeSetting | None, home: str | None, sites: Sequence[str] | None = None
) -> ClientScope | None:
    """Parse a setting and complete it with ``home``; None if no scope is set.

    With ``sites`` (the registry the home gateway publishes), every site name
    is checked against it too, with "did you mean". Raises
    :class:`ScopeSettingError` (a ``ScopeError`` naming the setting) before
    anything is sent, so a bad scope never costs a round trip.
    """
    if setting is None:
        return None
    try:
        scope = parse(setting.text)
        if sites is not None:
            plan_scope(scope, sites, home or None, text=setting.text)
    except ScopeError as err:
        raise ScopeSettingError(setting.origin, err) from None
    return ClientScope(scope, home or None, setting.origin)


def resolve_config(
    config: Mapping[str, Any], cloud: str | None = None, check_sites: bool = False
) -> ClientScope | None:
    """The scope of an openstacksdk cloud config (``CloudRegion.config``), completed
    with its ``region_name``; None if it sets no scope. With ``check_sites``,
    site names are checked against the list the home gateway publishes, when
    it can be read (:mod:`scoped_osc.registry`)."""
    setting = setting_from_config(config.get(CONFIG_KEY), cloud)
    home = config.get("region_name") or None
    resolved = resolve(setting, home)  # a scope that does not parse sends nothing
    if resolved is None or not check_sites:
        return resolved
    known = known_for(config)
    if known is None:
        return resolved
    return resolve(setting, home or known.site, known.sites)
