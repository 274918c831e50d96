"""Writes over ``&``: one logical resource, replicated at every site of the
scope, all or nothing (docs/design.md §3, replicated writes).

Before anything is written, every site gets its own version of the request
(:class:`Replication`): the same client-chosen ID where the API takes one
(Glance images, Nova flavors), its own IDs for the references in the body
(:mod:`scoped.references`), its own ID for a replica handle in the path
(:mod:`scoped.handles`), and a scope on its token whose unnamed services are
served at that site (the VM booted at Denver gets Denver's network). A
reference that means nothing at a site refuses the write before it is sent
anywhere. A create that fails at a required site is undone where it was
done (a compensating DELETE). The answer names every replica: the shared ID
or a handle, and ``OS-SCOPE:sites``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from scoped_grammar import STAR, Scope, Site, canonical

from .answer import Answer, SiteReport, Verdict
from .handles import HandleTooLong, has_handle, make_handle, path_at, path_handle
from .http import Body, Request
from .merge import Collection, created_ids
from .plan import All, Call, Node, plan_scope
from .references import Resolver, Unresolved, put, server_refs
from .tee import Tee

SITES_KEY = "OS-SCOPE:sites"
"""``{site: id}``: where the replicas of an ``&`` answer live."""

SHARED_ID: tuple[tuple[str, re.Pattern[str], str | None], ...] = (
    ("image", re.compile(r"^/v2/images/?$"), None),
    ("compute", re.compile(r"^(/v2(\.1)?)?/flavors/?$"), "flavor"),
)
"""Creates whose API takes the ID from the client: every replica gets the
same one. ``(service, path, key of the resource in the body)``."""

_SERVERS = re.compile(r"^(?P<v>(/v2(\.1)?)?)/servers/?$")

MAX_REPLICAS = 64
"""Most sites one create may go to when each makes its own ID: its handle
(~60 characters a site) stays well under 8 KB, what a URL may hold."""

CallSite = Callable[[str, Request], Awaitable[Answer]]
"""Send a request to one site, its body read (the executor's leaf)."""


def leaves(node: Node) -> list[Call]:
    if isinstance(node, Call):
        return [node]
    return [leaf for child in node.children for leaf in leaves(child)]


def is_create(req: Request) -> bool:
    return req.method == "POST"


@dataclass
class Replication:
    """An ``&`` write prepared: each site's request, or why it cannot be sent."""

    variants: dict[str, Request] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    """Site -> why its request cannot be made (nothing is sent anywhere)."""
    tee: Tee | None = None
    """A streamed body, one branch per child of the ``&``."""

    def at(self, req: Request, child: int) -> Callable[[str], Request | Answer]:
        """The request for a site under child ``child`` of the ``&``."""

        def shaped(site: str) -> Request | Answer:
            variant = self.variants.get(site)
            if variant is None:
                return absent_here(site)
            if self.tee is not None:
                stream = self.tee.branch(child)
                return variant.variant(body=Body(stream=stream, length=req.body.length))
            return variant

        return shaped


def absent_here(site: str) -> Answer:
    """A handle that names no replica at ``site``: the site is not asked."""
    return Answer(Verdict.ABSENT, 404, site=site)


def at_site(req: Request, site: str) -> Request | Answer:
    """``req`` as ``site`` gets it when its path holds a replica handle."""
    if not has_handle(req.path):
        return req
    path = path_at(req.path, site)
    if path is None:
        return absent_here(site)
    return req.variant(path=path)


def branch_scope(scope: Scope, service: str, site: str, home: str) -> str:
    """The scope a branch of an ``&`` carries to ``site``: the fanned-out
    service there, every service the scope does not name served there too
    (Denver's VM on Denver's network: ``*`` is the branch's site, whatever
    default came with the scope), identity where the token was issued."""
    entries = [(k, Site(site) if k == service else e) for k, e in scope.entries if k != STAR]
    if "identity" not in scope:
        entries.append(("identity", Site(home)))
    entries.append((STAR, Site(site)))
    return canonical(Scope(tuple(entries)))


class Writes:
    """Prepares, undoes and answers ``&`` writes for one gateway."""

    def __init__(self, call_site: CallSite, sites: Sequence[str], home: str) -> None:
        self.call_site = call_site
        self.sites = tuple(sites)
        self.home = home

    async def prepare(self, node: All, req: Request) -> Replication:
        rep = Replication()
        sites = [leaf.site for leaf in leaves(node)]
        body = _json_body(req)
        shared = is_create(req) and isinstance(body, dict) and _share_id(req, body)
        if is_create(req) and not shared and not has_handle(req.path) and len(sites) > MAX_REPLICAS:
            rep.refused[sites[0]] = (
                f"a create at {len(sites)} sites, each making its own ID, would need a "
                f"handle too long for a URL; at most {MAX_REPLICAS} sites per create"
            )
            return rep
        per_site: dict[str, Any] = {s: body for s in sites}
        if body is not None and req.method == "POST" and (m := _SERVERS.match(req.path)):
            per_site = await self._resolve(req, body, sites, m.group("v"), rep)
            if rep.refused:
                return rep
        for site in sites:
            shaped = at_site(req, site)
            if isinstance(shaped, Answer):
                continue  # no replica there: reported absent when its turn comes
            changes: dict[str, Any] = {}
            site_body = per_site[site]
            if site_body is not None:
                changes["body"] = Body(orjson.dumps(site_body))
            variant = shaped.variant(**changes) if changes else shaped
            if req.scope is not None:
                variant.carry(branch_scope(req.scope, req.service, site, self.home), req.scope)
            rep.variants[site] = variant
        if not req.body.replayable:
            rep.tee = Tee(req.body.payload(), len(node.children))  # type: ignore[arg-type]
        return rep

    async def _resolve(
        self,
        req: Request,
        body: dict[str, Any],
        sites: list[str],
        version: str,
        rep: Replication,
    ) -> dict[str, Any]:
        """Each site's own body of a server create: its references resolved."""
        refs = list(server_refs(body))
        if not refs:
            return {s: body for s in sites}
        plan = plan_scope(req.scope or Scope(), self.sites, self.home)

        def where(service: str, branch: str) -> tuple[str | None, list[str]]:
            """(where the branch's request finds ``service``, where the client did)."""
            if service == req.service:
                return branch, sites
            named = plan.services.get(service)
            if named is not None:
                named_sites = [c.site for c in leaves(named)]
                if isinstance(named, Call):
                    return named.site, named_sites
                # Scoped to several sites: the branch's own if it is one of
                # them (an & of both), else the service's own call decides.
                both = isinstance(named, All) and branch in named_sites
                return (branch if both else None), named_sites
            # Unnamed: served at the branch's site (branch_scope), looked up
            # by the client where the scope's default sent it.
            return branch, [c.site for c in leaves(plan.default)] if plan.default else [self.home]

        resolver = Resolver(self._lookup(req), version)

        async def resolved(site: str) -> Any:
            mine = orjson.loads(orjson.dumps(body))
            for ref in refs:
                target, sources = where(ref.rule.service, site)
                if target is None:
                    continue  # a | of sites: the service's own call resolves it
                try:
                    put(mine, ref.path, await resolver.resolve(ref, target, sources))
                except Unresolved as err:
                    rep.refused[site] = str(err)
            return mine

        # Every site's references at once: a WAN round trip, not one per site.
        bodies = await asyncio.gather(*(resolved(site) for site in sites))
        return dict(zip(sites, bodies, strict=True))

    def _lookup(self, req: Request) -> Callable[[str, str, str, str], Awaitable[tuple[int, Any]]]:
        headers = _without_body_headers(req.headers)

        async def lookup(site: str, service: str, path: str, query: str) -> tuple[int, Any]:
            ask = req.variant(
                method="GET", service=service, path=path, query=query, headers=headers, body=Body()
            )
            answer = await self.call_site(site, ask)
            if answer.verdict is Verdict.FAILED:
                return 0, None
            try:
                return answer.status, orjson.loads(answer.body) if answer.body else None
            except orjson.JSONDecodeError:
                return answer.status, None

        return lookup

    async def undo(
        self, req: Request, rep: Replication, done: Sequence[Answer]
    ) -> tuple[list[str], list[SiteReport]]:
        """Delete what a failed create made: (sites undone, the reports of the deletes)."""
        if not is_create(req):
            return [], []
        undone: list[str] = []
        reports: list[SiteReport] = []
        for answer in done:
            created = created_ids(answer.body)
            site = answer.site
            if answer.verdict is not Verdict.OK or created is None or site is None:
                continue
            variant = rep.variants.get(site, req)
            delete = variant.variant(
                method="DELETE",
                path=f"{variant.path.rstrip('/')}/{created}",
                query="",
                body=Body(),
                headers=_without_body_headers(variant.headers),
            )
            result = await self.call_site(site, delete)
            reports.extend(
                SiteReport(r.site, f"undo-{r.outcome}", r.ms, r.detail, r.status)
                for r in result.reports
            )
            if result.verdict in (Verdict.OK, Verdict.ABSENT):
                undone.append(site)
        return undone, reports

    def answer(self, req: Request, ok: list[Answer]) -> Answer:
        """One answer for replicas: the leftmost site's, naming every replica."""
        leftmost = ok[0]
        for a in ok[1:]:
            a.discard()
        if leftmost.body is None or (len(ok) < 2 and not has_handle(req.path)):
            return leftmost
        # Each replica's body decoded once: its ID and status come from it.
        decoded = [_decode(a.body) for a in ok]
        data, resource = decoded[0]
        resources = [r for _, r in decoded]
        if resource is None:
            return leftmost
        if has_handle(req.path):
            found = path_handle(req.path)
            ids = {a.site: found[a.site] for a in ok if a.site in found}
        else:
            ids = {
                a.site: str(r["id"])
                for a, r in zip(ok, resources, strict=True)
                if r is not None and a.site is not None
            }
        if len(ids) < len(ok):
            return leftmost
        status = _aggregate([_status(r) for r in resources])
        if status is not None:
            resource["status"] = status
        own = ids.get(leftmost.site or "")
        if own is not None and len(set(ids.values())) > 1:
            # Each site made its own ID: the handle stands for all of them,
            # as the ID, in the resource's links and in Location.
            handle = make_handle(ids)
            resource["id"] = handle
            for link in resource.get("links") or ():
                if isinstance(link, dict) and isinstance(link.get("href"), str):
                    link["href"] = _segment(link["href"], own, handle)
            leftmost.headers = [
                (k, _segment(v, own, handle) if k == "location" else v) for k, v in leftmost.headers
            ]
        resource[SITES_KEY] = ids
        leftmost.body = orjson.dumps(data)
        return leftmost


def fold_replicas(coll: Collection, query: str) -> None:
    """A merged list filtered by name is a lookup (OSC's ``--image debian``,
    ``server delete vm``): the items of one name, at most one per site, are
    the replicas of one resource and become one item, with the handle (or
    the shared ID) and ``OS-SCOPE:sites``, so the lookup finds one resource.
    Only for a list that fits one page: a folded item cannot be a marker."""
    if "name" not in dict(parse_qsl(query)) or any(coll.more.values()):
        return
    seen: set[tuple[str, str]] = set()
    ambiguous: set[str] = set()  # two of one name at one site: two resources
    for site, item in coll.items:
        name = item.get("name")
        if isinstance(name, str):
            if (name, site) in seen:
                ambiguous.add(name)
            seen.add((name, site))
    groups: list[list[tuple[str, dict[str, Any]]]] = []
    by_name: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for site, item in coll.items:
        name = item.get("name")
        if not isinstance(name, str) or name in ambiguous:
            groups.append([(site, item)])
        elif name in by_name:
            by_name[name].append((site, item))
        else:
            by_name[name] = [(site, item)]
            groups.append(by_name[name])
    if len(groups) == len(coll.items):
        return
    folded: list[tuple[str, dict[str, Any]]] = []
    for group in groups:
        try:
            folded.append(group[0] if len(group) == 1 else _fold(group))
        except HandleTooLong:
            folded.extend(group)  # too many replicas for one handle: listed each
    coll.items = folded


def _fold(group: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    site, first = group[0]
    ids = {s: str(item.get("id")) for s, item in group}
    item = dict(first)
    if len(set(ids.values())) > 1:
        handle = make_handle(ids)
        item["id"] = handle
        links = item.get("links")
        if isinstance(links, list):
            item["links"] = [
                {**link, "href": _segment(link["href"], ids[site], handle)}
                if isinstance(link, dict) and isinstance(link.get("href"), str)
                else link
                for link in links
            ]
    status = _aggregate([_status(i) for _, i in group])
    if status is not None:
        item["status"] = status
    item[SITES_KEY] = ids
    return site, item


def _segment(url: str, old: str, new: str) -> str:
    """``url`` with the path segment ``old`` replaced by ``new``."""
    parts = url.split("/")
    return "/".join(new if part == old else part for part in parts)


def _without_body_headers(headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in headers if k not in ("content-type", "content-length"))


def _json_body(req: Request) -> Any:
    data = req.body.data
    if not data or req.method not in ("POST", "PUT", "PATCH"):
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _share_id(req: Request, body: dict[str, Any]) -> bool:
    """Give the create one ID for every site, where its API takes one."""
    for service, path, key in SHARED_ID:
        if service == req.service and path.match(req.path):
            target = body.get(key) if key else body
            if isinstance(target, dict) and target.get("id") in (None, "", "auto"):
                target["id"] = str(uuid.uuid4())
            return True
    return False


def _decode(body: bytes | None) -> tuple[Any, dict[str, Any] | None]:
    """A show or create answer's document, and the one resource in it."""
    try:
        data = orjson.loads(body or b"null")
    except orjson.JSONDecodeError:
        return None, None
    return data, _resource(data)


def _status(resource: dict[str, Any] | None) -> str | None:
    status = resource.get("status") if resource is not None else None
    return status if isinstance(status, str) else None


def _resource(data: Any) -> dict[str, Any] | None:
    """The one resource of a show or create answer (``{"server": {...}}`` or the body)."""
    if not isinstance(data, dict):
        return None
    if "id" in data:
        return data
    inner = [v for v in data.values() if isinstance(v, dict) and "id" in v]
    return inner[0] if len(inner) == 1 else None


_BROKEN = ("error", "killed", "deleted", "deactivated")


def _aggregate(statuses: list[str | None]) -> str | None:
    """The status of the logical resource: every replica's if they agree,
    else a broken one's, else the first that is not yet where the others are
    (``--wait`` then waits for the last replica)."""
    known = [s for s in statuses if s is not None]
    if not known or len(set(known)) == 1:
        return known[0] if known else None
    for s in known:
        if s.lower() in _BROKEN:
            return s
    for s in known:
        if s.lower() not in ("active", "available"):
            return s
    return known[0]
