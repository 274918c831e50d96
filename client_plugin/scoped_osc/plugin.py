"""The python-openstackclient plugin: ``--os-scope`` / ``OS_SCOPE`` on every command.

OSC imports this module on every run (entry point ``openstack.cli.extension``)
and calls :func:`build_option_parser` with its global parser; :func:`make_client`
is called lazily, only when a command asks for ``client_manager.scope``.

Neither is called between "the session exists" and "the first request", which
is where a scope must be put on the session. The supported hook there is
openstacksdk's ``vendor_hook``: osc-lib builds one keystoneauth1 session per
run (``ClientManager.setup_auth``), then an openstacksdk ``Connection`` on it,
and the ``Connection`` runs the cloud config's ``vendor_hook`` with itself,
before any request. OSC turns every ``os_*`` attribute of its parsed
arguments into a cloud config key, so the default of ``os_vendor_hook`` set
here names :func:`scoped_osc.hook.osc_vendor_hook`; it wraps the session's auth
plugin (see :mod:`scoped_osc.auth`), and every client of the run (compute,
image, identity, network, volume, placement, ...) shares that session. A
``vendor_hook`` the cloud sets itself still runs, after ours.

Nothing here imports the grammar: ``openstack --help`` and runs without a
scope do not pay for it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, TypeVar

from .setting import CLI_OPTION, ENV_VAR, ScopeSetting

API_NAME = "scope"
API_VERSION_OPTION = "os_scope_api_version"
API_VERSIONS = ("1",)
DEFAULT_API_VERSION = "1"

VENDOR_HOOK = "scoped_osc.hook:osc_vendor_hook"
"""The openstacksdk ``vendor_hook`` (``module:function``) OSC runs on its session."""

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)


def make_client(instance: Any) -> Any:
    """``client_manager.scope``: the scope this run sends, as configured.

    Returns a :class:`~scoped_osc.commands.ConfiguredScope`; resolving it
    parses the scope (``ScopeError`` if it is bad).
    """
    from .commands import ConfiguredScope  # noqa: PLC0415 - keep `openstack` start-up light

    return ConfiguredScope.of(instance)


def _setting(value: str) -> ScopeSetting | None:
    if isinstance(value, ScopeSetting):
        return value  # the OS_SCOPE default: argparse runs `type` on string defaults too
    text = value.strip()
    # An empty value is "not set", as for every OSC option: clouds.yaml then applies.
    return ScopeSetting(text, CLI_OPTION) if text else None


def build_option_parser(parser: _Parser) -> _Parser:
    """Add ``--os-scope`` (default ``OS_SCOPE``) and ``--os-scope-api-version``."""
    env = os.environ.get(ENV_VAR, "").strip()
    parser.add_argument(
        CLI_OPTION,
        metavar="<scope>",
        dest="os_scope",
        type=_setting,
        default=ScopeSetting(env, ENV_VAR) if env else None,
        help=(
            "Where each service of every request runs, e.g. "
            "'<nova: Berlin&Denver, glance: Denver|Paris>' ('&' fan out, '|' fail "
            "over); services it does not name go to the home site (the region). "
            "Overrides the cloud's 'scope' in clouds.yaml (Env: OS_SCOPE)"
        ),
    )
    parser.add_argument(
        "--os-scope-api-version",
        metavar="<scope-api-version>",
        default=os.environ.get("OS_SCOPE_API_VERSION") or None,
        help=(
            f"Scope commands API version, default={DEFAULT_API_VERSION} (Env: OS_SCOPE_API_VERSION)"
        ),
    )
    # Names the hook that puts the scope on the session (module docstring).
    parser.set_defaults(os_vendor_hook=VENDOR_HOOK)
    return parser
