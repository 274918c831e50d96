"""openstacksdk: a ``Connection`` whose requests carry a scope.

``connect()`` is ``openstack.connect()`` plus a scope: given as an argument,
else the ``scope`` key of the cloud in clouds.yaml. Any openstacksdk program
can also get the clouds.yaml behaviour without calling this module, by naming
:func:`vendor_hook` in the cloud's config (openstacksdk runs a cloud's
``vendor_hook`` on every ``Connection`` it makes)::

    clouds:
      berlin:
        region_name: Berlin
        scope: "<nova: Berlin&Denver>"
        vendor_hook: "scoped_osc.sdk:vendor_hook"
"""

from __future__ import annotations

from typing import Any

import openstack.config
from openstack import connection

from .auth import install
from .scope import ClientScope, ScopeLike, resolve_config
from .session import client_scope


def connect(
    cloud: str | None = None,
    *,
    scope: ScopeLike | ClientScope | None = None,
    **kwargs: Any,
) -> connection.Connection:
    """An openstacksdk ``Connection`` to ``cloud`` whose requests carry ``scope``.

    ``kwargs`` are ``openstack.connect``'s (``region_name``, ``auth``,
    ``auth_type``, ``app_name``, ...). ``scope`` defaults to the cloud's
    ``scope`` in clouds.yaml; with neither, the connection is a plain one. The
    scope is completed with the cloud's ``region_name``. A bad scope raises
    ``ScopeError`` before any request is made.
    """
    region = openstack.config.get_cloud_region(cloud=cloud, **kwargs)
    home = region.region_name or None
    if scope is not None:
        resolved: ClientScope | None = client_scope(scope, home)
    else:
        resolved = resolve_config(region.config, region.name)
    conn = connection.Connection(config=region, vendor_hook=kwargs.get("vendor_hook"))
    if resolved is not None:
        install(conn.session, resolved)
    return conn


def vendor_hook(conn: connection.Connection) -> None:
    """openstacksdk ``vendor_hook``: carry the cloud's ``scope`` on ``conn``.

    A bad scope raises ``ScopeError`` (openstacksdk lets it through), so the
    program stops before its first request.
    """
    resolved = resolve_config(conn.config.config, conn.config.name)
    if resolved is not None:
        install(conn.session, resolved)
