"""scoped's client side: carry a scope on every request of an OpenStack client.

- ``openstack ... --os-scope "<nova: Berlin&Denver>"`` (or ``OS_SCOPE``, or a
  cloud's ``scope`` in clouds.yaml): the python-openstackclient plugin,
  :mod:`scoped_osc.plugin`, with the ``openstack scope explain|show`` commands.
- :func:`connect`: an openstacksdk ``Connection`` carrying a scope.
- :func:`scoped_session`, :class:`ScopedAdapter`, :class:`ScopedAuth`: the
  same for any keystoneauth1-based client.

Names are imported on first use (PEP 562), because OSC imports the plugin
module, hence this package, on every run, and the grammar takes a while to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .auth import ScopedAuth, ScopedIdentityAuth, install, scoped_auth
    from .scope import ClientScope, ScopeSettingError, complete, header_text, resolve
    from .sdk import connect, vendor_hook
    from .session import ScopedAdapter, client_scope, scoped_session
    from .setting import ScopeSetting

_EXPORTS = {
    "ScopedAuth": "auth",
    "ScopedIdentityAuth": "auth",
    "install": "auth",
    "scoped_auth": "auth",
    "ClientScope": "scope",
    "ScopeSettingError": "scope",
    "complete": "scope",
    "header_text": "scope",
    "resolve": "scope",
    "connect": "sdk",
    "vendor_hook": "sdk",
    "ScopedAdapter": "session",
    "client_scope": "session",
    "scoped_session": "session",
    "ScopeSetting": "setting",
}

__all__ = [
    "ClientScope",
    "ScopeSetting",
    "ScopeSettingError",
    "ScopedAdapter",
    "ScopedAuth",
    "ScopedIdentityAuth",
    "client_scope",
    "complete",
    "connect",
    "header_text",
    "install",
    "resolve",
    "scoped_auth",
    "scoped_session",
    "vendor_hook",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
