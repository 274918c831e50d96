"""The scope language of scoped: grammar, AST, canonical text and errors.

    >>> from scoped_grammar import parse, canonical
    >>> canonical(parse("{nova: Berlin & Denver, glance: Denver|Paris}"))
    '<compute: Berlin&Denver, image: Denver|Paris>'

Depends on lark and os-service-types only, so a service's venv can hold it.
"""

from .canonical import canonical, expr_text
from .errors import (
    DuplicateServiceError,
    ScopedError,
    ScopeError,
    ScopeSyntaxError,
    ScopeTooLongError,
    UnknownServiceError,
    UnknownSiteError,
    nearest,
)
from .nodes import STAR, AllOf, EverySite, Expr, FirstOf, Opt, Scope, Site, all_of, first_of, opt
from .parser import MAX_NESTING, MAX_SCOPE_LENGTH, parse, parse_expr, site_positions

__all__ = [
    "MAX_NESTING",
    "MAX_SCOPE_LENGTH",
    "STAR",
    "AllOf",
    "DuplicateServiceError",
    "EverySite",
    "Expr",
    "FirstOf",
    "Opt",
    "Scope",
    "ScopeError",
    "ScopeSyntaxError",
    "ScopeTooLongError",
    "ScopedError",
    "Site",
    "UnknownServiceError",
    "UnknownSiteError",
    "all_of",
    "canonical",
    "expr_text",
    "first_of",
    "nearest",
    "opt",
    "parse",
    "parse_expr",
    "site_positions",
]
