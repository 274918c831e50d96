"""The exception hierarchy of scoped, rooted in :class:`ScopedError`.

The language errors live in ``scoped_grammar.errors`` (the lowest layer);
they are re-exported here so callers import every error from one place.
"""

from scoped_grammar.errors import (
    DuplicateServiceError,
    ScopedError,
    ScopeError,
    ScopeSyntaxError,
    ScopeTooLongError,
    UnknownServiceError,
    UnknownSiteError,
)

__all__ = [
    "DuplicateServiceError",
    "ScopeError",
    "ScopeSyntaxError",
    "ScopeTooLongError",
    "ScopedError",
    "UnknownServiceError",
    "UnknownSiteError",
]
