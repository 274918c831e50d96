"""Scope -> plan: which sites each service's request goes to, and how.

A plan node is a :class:`Call` (one site), an :class:`All` (``&``: every child,
concurrently) or a :class:`First` (``|``: children in order until one
succeeds). Planning is where the scope meets the site registry: ``*`` is
expanded over the registry in its order, duplicates are dropped (first place
kept), nested nodes of the same kind are flattened and one-child nodes
collapse, so the executor never sees redundant work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, TypeAlias

from scoped_grammar import (
    STAR,
    AllOf,
    EverySite,
    Expr,
    FirstOf,
    Opt,
    Scope,
    ScopeError,
    Site,
    UnknownSiteError,
    nearest,
    site_positions,
)


@dataclass(frozen=True, slots=True)
class Call:
    """Send the request to one site."""

    site: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class All:
    """Send it to every child concurrently; merge the answers (``&``)."""

    children: tuple[Node, ...]
    optional: bool = False


@dataclass(frozen=True, slots=True)
class First:
    """Try the children in order; the first success is the answer (``|``)."""

    children: tuple[Node, ...]
    optional: bool = False


Node: TypeAlias = Call | All | First


@dataclass(frozen=True)
class Plan:
    """The plan of every service of one scope, and the default for the rest."""

    services: Mapping[str, Node] = field(default_factory=dict)
    default: Node | None = None

    def for_service(self, service_type: str) -> Node | None:
        """The plan for a request to ``service_type``."""
        return self.services.get(service_type, self.default)

    def to_json(self) -> dict[str, Any]:
        """The ``plan`` object of ``scoped explain --json`` (docs/design.md §8)."""
        out = {service: node_json(node) for service, node in self.services.items()}
        if self.default is not None:
            out[STAR] = node_json(self.default)
        return out


def node_json(node: Node) -> dict[str, Any]:
    """``{"site": ...}``, ``{"all": [...]}`` or ``{"first": [...]}``, plus ``optional``."""
    out: dict[str, Any]
    if isinstance(node, Call):
        out = {"site": node.site}
    elif isinstance(node, All):
        out = {"all": [node_json(c) for c in node.children]}
    else:
        out = {"first": [node_json(c) for c in node.children]}
    if node.optional:
        out["optional"] = True
    return out


def plan_scope(
    scope: Scope,
    sites: Sequence[str] | None = None,
    home: str | None = None,
    text: str | None = None,
) -> Plan:
    """Plan every entry of ``scope`` against the registry ``sites``.

    ``sites`` is the registry in preference order; None means "no registry":
    any site name is accepted but ``*`` cannot be expanded. ``home`` is where
    services the scope does not name go, unless the scope has a ``*`` key.
    ``text`` (the scope as written) lets errors point at the fault.
    """
    registry = tuple(sites) if sites is not None else None
    if home is not None and registry is not None and home not in registry:
        raise UnknownSiteError(home, nearest(home, registry))
    try:
        return _plan_cached(scope, registry, home)
    except ScopeError as err:
        if text is None or err.text is not None:
            raise
        raise _locate(err, text, registry) from None


def _locate(err: ScopeError, text: str, registry: tuple[str, ...] | None) -> ScopeError:
    """The same error, pointing at the first offending site in text order."""
    for name, pos in site_positions(text):
        if name is None and registry is None:
            return ScopeError(err.message, text, pos)
        unknown = name is not None and registry is not None and name not in registry
        if isinstance(err, UnknownSiteError) and unknown:
            assert name is not None and registry is not None
            return UnknownSiteError(name, nearest(name, registry), text, pos)
    return err


@lru_cache(maxsize=4096)
def _plan_cached(scope: Scope, registry: tuple[str, ...] | None, home: str | None) -> Plan:
    services = {k: plan_expr(e, registry) for k, e in scope.entries if k != STAR}
    star = scope.default
    if star is not None:
        default: Node | None = plan_expr(star, registry)
    elif home is not None:
        default = Call(home)
    else:
        default = None
    return Plan(services, default)


def plan_expr(expr: Expr, sites: Sequence[str] | None = None) -> Node:
    """The plan of one site expression (see the module docstring for the rules)."""
    if isinstance(expr, Site):
        if sites is not None and expr.name not in sites:
            raise UnknownSiteError(expr.name, nearest(expr.name, sites))
        return Call(expr.name)
    if isinstance(expr, EverySite):
        if sites is None:
            raise ScopeError("'*' as a site means every known site; no site registry was given")
        if not sites:
            raise ScopeError("'*' as a site means every known site; the registry is empty")
        return _group(All, [Call(s) for s in sites], optional=False)
    if isinstance(expr, Opt) and isinstance(expr.item, EverySite):
        # "Every site, each optional": best effort over the whole registry,
        # in two characters (a 1000-site S1?&S2?&... is past the length limit).
        every = plan_expr(expr.item, sites)
        children = every.children if isinstance(every, All) else (every,)
        return _group(All, [replace(c, optional=True) for c in children], optional=False)
    if isinstance(expr, Opt):
        node = plan_expr(expr.item, sites)
        return replace(node, optional=True)
    kind: type[All] | type[First] = All if isinstance(expr, AllOf) else First
    assert isinstance(expr, (AllOf, FirstOf))
    return _group(kind, [plan_expr(i, sites) for i in expr.items], optional=False)


def _group(kind: type[All] | type[First], children: list[Node], optional: bool) -> Node:
    flat: list[Node] = []
    for child in children:
        if isinstance(child, kind) and not child.optional:
            flat.extend(child.children)
        else:
            flat.append(child)
    # Drop duplicates, first place kept. A site named both plainly and as
    # optional is required: "A & A?" must still succeed at A.
    unique: dict[Node, Node] = {}
    for child in flat:
        key = replace(child, optional=False)
        if key in unique:
            unique[key] = replace(key, optional=unique[key].optional and child.optional)
        else:
            unique[key] = child
    kept = list(unique.values())
    if len(kept) == 1:
        only = kept[0]
        return replace(only, optional=only.optional or optional)
    return kind(tuple(kept), optional)
