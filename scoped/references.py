"""References in a body sent to several sites, resolved at each site
(docs/design.md §3, replicated writes).

A server create names a flavor, an image, networks: IDs the client looked up
where the scope sent its lookups. A site where that ID means nothing gets
the ID of the resource of the same name there, looked up where the branch's
scope sends the referenced service (the flavor at the branch's own Nova, the
image where its ``image`` scope says). A site that has no such resource
refuses the write before anything is written anywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .handles import read_handle

Lookup = Callable[[str, str, str, str], Awaitable[tuple[int, Any]]]
"""``(site, service, path, query) -> (status, JSON body or None)``; status 0
when the site could not be asked."""


@dataclass(frozen=True, slots=True)
class Rule:
    """How one kind of referenced resource is found at a site."""

    service: str
    what: str
    show: str
    """Path of one resource, ``{v}`` the request's API version prefix, ``{id}``."""
    find: str
    """Path of the list filtered by name."""
    key: str | None
    """Key of the resource in a show answer (None: the body is the resource)."""
    plural: str
    """Key of the list in a find answer."""


FLAVOR = Rule("compute", "flavor", "{v}/flavors/{id}", "{v}/flavors/detail", "flavor", "flavors")
IMAGE = Rule("image", "image", "/v2/images/{id}", "/v2/images", None, "images")
NETWORK = Rule("network", "network", "/v2.0/networks/{id}", "/v2.0/networks", "network", "networks")


@dataclass(frozen=True, slots=True)
class Ref:
    """One reference in a body: where it is and what it points at."""

    rule: Rule
    path: tuple[str | int, ...]
    value: str


def server_refs(body: Any) -> Iterator[Ref]:
    """The references of a Nova ``POST /servers`` body."""
    server = body.get("server") if isinstance(body, dict) else None
    if not isinstance(server, dict):
        return
    for key, rule in (("flavorRef", FLAVOR), ("imageRef", IMAGE)):
        value = server.get(key)
        if isinstance(value, str) and value:
            yield Ref(rule, ("server", key), value)
    networks = server.get("networks")
    if isinstance(networks, list):
        for i, net in enumerate(networks):
            if isinstance(net, dict) and isinstance(net.get("uuid"), str):
                yield Ref(NETWORK, ("server", "networks", i, "uuid"), net["uuid"])
    bdms = server.get("block_device_mapping_v2")
    if isinstance(bdms, list):
        for i, bdm in enumerate(bdms):
            if (
                isinstance(bdm, dict)
                and bdm.get("source_type") == "image"
                and isinstance(bdm.get("uuid"), str)
            ):
                yield Ref(IMAGE, ("server", "block_device_mapping_v2", i, "uuid"), bdm["uuid"])


def put(body: Any, path: tuple[str | int, ...], value: str) -> None:
    for step in path[:-1]:
        body = body[step]
    body[path[-1]] = value


class Unresolved(Exception):
    """A reference that means nothing at a site, worded for the operator."""


@dataclass
class Resolver:
    """Resolves references for one request; every lookup is made once."""

    lookup: Lookup
    version: str
    """The API version prefix of the request's path (``/v2.1``)."""

    def __post_init__(self) -> None:
        self._shown: dict[tuple[str, str, str], tuple[int, Any]] = {}
        self._found: dict[tuple[str, str, str], tuple[int, Any]] = {}

    async def _show(self, site: str, rule: Rule, ref_id: str) -> tuple[int, Any]:
        key = (site, rule.what, ref_id)
        if key not in self._shown:
            path = rule.show.format(v=self.version, id=ref_id)
            self._shown[key] = await self.lookup(site, rule.service, path, "")
        return self._shown[key]

    async def _named(self, site: str, rule: Rule, name: str) -> tuple[int, Any]:
        key = (site, rule.what, name)
        if key not in self._found:
            path = rule.find.format(v=self.version)
            query = "" if rule is FLAVOR else f"name={name}"  # Nova filters no names
            self._found[key] = await self.lookup(site, rule.service, path, query)
        return self._found[key]

    async def resolve(self, ref: Ref, target: str, sources: list[str]) -> str:
        """The ID at ``target`` of what ``ref`` names; ``sources`` are the
        sites where the client may have found it. Raises Unresolved."""
        replicas = read_handle(ref.value)
        if replicas is not None:  # a replica handle: the target's own replica
            if target not in replicas:
                raise Unresolved(f"the {ref.rule.what} {ref.value!r} has no replica at {target}")
            return replicas[target]
        status, _ = await self._show(target, ref.rule, ref.value)
        if status != 404:
            return ref.value  # there (or the site cannot be asked: its call will tell)
        name = None
        found_at = None
        for site in sources:
            if site == target:
                continue
            status, data = await self._show(site, ref.rule, ref.value)
            if status == 200 and isinstance(data, dict):
                item = data.get(ref.rule.key) if ref.rule.key else data
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    name, found_at = item["name"], site
                    break
        if name is None:
            where = ", ".join(sources)
            raise Unresolved(f"no {ref.rule.what} {ref.value!r} at {target} (nor at {where})")
        status, data = await self._named(target, ref.rule, name)
        if status == 0:
            return ref.value
        items = data.get(ref.rule.plural) if isinstance(data, dict) else None
        same = [i for i in items or () if isinstance(i, dict) and i.get("name") == name]
        if not same:
            raise Unresolved(
                f"{target} has no {ref.rule.what} named {name!r} ({ref.value!r} is {found_at}'s)"
            )
        if len(same) > 1:
            raise Unresolved(f"{target} has {len(same)} {ref.rule.what}s named {name!r}")
        return str(same[0]["id"])
