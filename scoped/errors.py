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
    "EXIT_BAD_INPUT",
    "ConfigError",
    "DuplicateServiceError",
    "GatewayError",
    "ScopeError",
    "ScopeSyntaxError",
    "ScopeTooLongError",
    "ScopedError",
    "UnknownServiceError",
    "UnknownSiteError",
]


EXIT_BAD_INPUT = 2
"""The exit status of every scoped command (``scoped``, ``openstack scope``)
given bad input: a bad scope, config or option; the error goes to stderr."""


class ConfigError(ScopedError):
    """The gateway's configuration is wrong; the message names the file and key."""


class GatewayError(ScopedError):
    """A request the gateway refuses or cannot serve; carries the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
