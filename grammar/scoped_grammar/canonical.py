"""Canonical text: one spelling per scope (docs/design.md §2).

Angle form, keys as official service types sorted with ``*`` last, ``, ``
between entries, no spaces around operators, minimal parentheses, chains
flattened (the AST is flat by construction), nothing dropped.
"""

from __future__ import annotations

import json
import re

from .nodes import AllOf, EverySite, Expr, FirstOf, Opt, Scope, Site

_BARE = re.compile(r"[\w.\-]+")


def site_text(name: str) -> str:
    """A site name as written in a scope: bare if it can be, else quoted."""
    if _BARE.fullmatch(name):
        return name
    return json.dumps(name, ensure_ascii=False)


def expr_text(expr: Expr) -> str:
    """Canonical text of one site expression."""
    if isinstance(expr, Site):
        return site_text(expr.name)
    if isinstance(expr, EverySite):
        return "*"
    if isinstance(expr, Opt):
        inner = expr_text(expr.item)
        return f"({inner})?" if isinstance(expr.item, (AllOf, FirstOf)) else f"{inner}?"
    if isinstance(expr, AllOf):
        # '&' binds tighter than '|': only a FirstOf item needs parentheses.
        return "&".join(
            f"({expr_text(i)})" if isinstance(i, FirstOf) else expr_text(i) for i in expr.items
        )
    return "|".join(expr_text(i) for i in expr.items)


def canonical(scope: Scope) -> str:
    """Canonical text of a scope: ``<compute: Berlin&Denver, image: Denver|Paris>``."""
    return "<" + ", ".join(f"{key}: {expr_text(expr)}" for key, expr in scope.entries) + ">"
