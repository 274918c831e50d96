"""The openstacksdk ``vendor_hook`` that python-openstackclient runs on its session.

:mod:`scoped_osc.plugin` names :func:`osc_vendor_hook` as the default
``vendor_hook`` of every OSC run. osc-lib's ``ClientManager.setup_auth``
builds the run's keystoneauth1 session, then an openstacksdk ``Connection``
on it; the ``Connection`` calls this hook before any request is made, even
the token request. Here the scope is read (``--os-scope`` > ``OS_SCOPE`` >
the cloud's ``scope``), parsed, completed with the region, and the session's
auth plugin wrapped so that every authenticated request carries it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from openstack import connection
from scoped_grammar import ScopeError

from .auth import install
from .scope import resolve_config

LOG = logging.getLogger("scoped_osc")

EXIT_BAD_SCOPE = 2
"""As ``scoped explain``: 2 for a bad scope, which is bad input."""


def osc_vendor_hook(conn: connection.Connection) -> None:
    """Carry the run's scope on ``conn.session``; a bad scope ends the run (status 2).

    It is the CLI: the error goes to stderr with its caret, and the process
    exits with status 2 before any request; a traceback is for bugs. The
    cloud's own ``vendor_hook``, if it sets one, runs afterwards.
    """
    region = conn.config
    try:
        resolved = resolve_config(region.config, region.name, check_sites=True)
    except ScopeError as err:
        print(f"openstack: {err}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SCOPE) from None
    if resolved is not None:
        install(conn.session, resolved)
    _run_cloud_vendor_hook(conn)


def _run_cloud_vendor_hook(conn: connection.Connection) -> None:
    """Run the ``vendor_hook`` of the cloud's own config (clouds.yaml or its
    profile), which OSC's argument default for ours has shadowed."""
    own = _cloud_vendor_hook(conn)
    if not own or own == f"{__name__}:{osc_vendor_hook.__name__}":
        return
    from importlib.metadata import EntryPoint  # noqa: PLC0415 - rarely needed

    LOG.debug("running the cloud's own vendor_hook %s", own)
    hook: Any = EntryPoint(name="vendor_hook", value=own, group="vendor_hook").load()
    hook(conn)


def _cloud_vendor_hook(conn: connection.Connection) -> str | None:
    loader = getattr(conn.config, "_openstack_config", None)
    if loader is None:
        return None
    try:
        own = loader.get_one(
            cloud=conn.config.name or None,
            validate=False,
            region_name=conn.config.region_name or None,
        )
    except Exception as err:  # best effort: a cloud built from arguments alone has none
        LOG.debug("no cloud config to find a vendor_hook in: %s", err)
        return None
    value = own.config.get("vendor_hook")
    return str(value) if value else None
