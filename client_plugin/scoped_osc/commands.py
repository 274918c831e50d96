"""``openstack scope explain``, ``openstack scope show`` and ``openstack
scope list``.

``scope explain`` is ``scoped explain`` inside OSC (same arguments, output and
exit status: the core's :func:`scoped.explain.explain`). ``scope show`` prints
the scope this run would send, completed and canonical, and where it was set.
Neither needs to authenticate. ``scope list KIND`` lists servers, images,
... under the run's scope with the site each item lives at (the
``OS-SCOPE:site`` a gateway adds to every item of a merged ``&`` list, which
the service-specific list commands do not show).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from osc_lib import exceptions
from osc_lib.command import command
from scoped_grammar import ScopeError

from scoped.errors import EXIT_BAD_INPUT, ScopedError
from scoped.explain import explain, site_names
from scoped.merge import SITE_KEY

from .registry import known_for
from .scope import ClientScope, resolve
from .setting import CONFIG_KEY, ScopeSetting, setting_from_config


@dataclass(frozen=True)
class ConfiguredScope:
    """The scope an OSC run is configured with (``client_manager.scope``)."""

    setting: ScopeSetting | None
    home: str | None

    @classmethod
    def of(cls, client_manager: Any) -> ConfiguredScope:
        """From the run's merged config: ``--os-scope`` > ``OS_SCOPE`` > clouds.yaml."""
        config = client_manager.get_configuration()
        cloud = config.get("cloud") or None
        setting = setting_from_config(config.get(CONFIG_KEY), cloud)
        return cls(setting, config.get("region_name") or None)

    def resolve(self) -> ClientScope | None:
        """Parsed and completed; ``ScopeError`` (naming the setting) if it is bad."""
        return resolve(self.setting, self.home)


class ExplainScope(command.Command):
    _description = (
        "Parse, check and show a scope: canonical text and plan, as 'scoped explain'.\n\n"
        "Exit status 2 on a bad scope, with the error and a caret on stderr."
    )
    auth_required = False

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "scope",
            metavar="<scope>",
            help='The scope, e.g. "<nova: Berlin&Denver, glance: Denver|Paris>"',
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object")
        parser.add_argument(
            "--sites",
            metavar="<site,site,...>",
            help=(
                "The site registry, in preference order: checks site names and "
                "expands '*' (default: the list the cloud's gateway publishes at "
                "/.well-known/scoped, when it can be read)"
            ),
        )
        parser.add_argument(
            "--home", metavar="<site>", help="The home site: where unnamed services go"
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        try:
            home = parsed_args.home
            if parsed_args.sites is not None:
                sites: Sequence[str] | None = site_names(parsed_args.sites)
            else:
                # The home gateway publishes its registry: check names against
                # it. Unreadable (a filter site, no network): no registry.
                known = known_for(self.app.client_manager.get_configuration())
                sites = known.sites if known is not None else None
                home = home or (known.site if known is not None else None)
            result = explain(parsed_args.scope, sites, home)
        except ScopedError as err:
            self.app.stderr.write(f"openstack scope explain: {err}\n")
            return EXIT_BAD_INPUT
        if parsed_args.json:
            self.app.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        else:
            self.app.stdout.write(result.render() + "\n")
        return 0


class ShowScope(command.ShowOne):
    _description = (
        "Show the scope this command line sends, completed with the home site.\n\n"
        "The scope comes from --os-scope, else OS_SCOPE, else the cloud's 'scope' in "
        "clouds.yaml; services it does not name go to the home site (the region). "
        "Exit status 2 on a bad scope."
    )
    auth_required = False

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Sequence[Any]]:
        # Read from the client manager's config directly: ``client_manager.scope``
        # (make_client) goes through osc-lib's ClientCache, deprecated for removal.
        configured = ConfiguredScope.of(self.app.client_manager)
        resolved = configured.resolve()
        columns = ("scope", "home", "source", "token_suffix")
        if resolved is None:
            return columns, (None, configured.home, None, None)
        return columns, (resolved.header, resolved.home, resolved.origin, resolved.token_suffix)

    def run(self, parsed_args: argparse.Namespace) -> int:
        try:
            return super().run(parsed_args)
        except ScopeError as err:
            self.app.stderr.write(f"openstack: {err}\n")
            return EXIT_BAD_INPUT


LISTABLE: dict[str, tuple[str, str, str]] = {
    "servers": ("compute", "/servers/detail", "servers"),
    "flavors": ("compute", "/flavors/detail", "flavors"),
    "images": ("image", "/images", "images"),
    "networks": ("network", "/networks", "networks"),
    "ports": ("network", "/ports", "ports"),
    "users": ("identity", "/users", "users"),
    "projects": ("identity", "/projects", "projects"),
}
"""kind -> (service type, path under the service's versioned endpoint, list key)."""


class ListScoped(command.Lister):
    _description = (
        "List resources under the scope, with the site each one lives at.\n\n"
        "The first page of the merged list, as the gateway answers it: an item a "
        "site has is shown once per site (replicas of one resource included)."
    )

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "kind", metavar="<kind>", choices=sorted(LISTABLE), help=", ".join(sorted(LISTABLE))
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Any]:
        service, path, key = LISTABLE[parsed_args.kind]
        conn = self.app.client_manager.sdk_connection
        proxy = getattr(conn, service)
        resp = proxy.get(path)
        if resp.status_code >= 400:
            raise exceptions.CommandError(f"GET {path}: {resp.status_code} {resp.text[:500]}")
        items = resp.json().get(key, [])
        columns = ("ID", "Name", "Status", "Site")
        rows = [
            (i.get("id"), i.get("name"), i.get("status"), i.get(SITE_KEY))
            for i in items
            if isinstance(i, dict)
        ]
        return columns, rows
