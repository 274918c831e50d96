"""The exception hierarchy of scoped, rooted in :class:`ScopedError`.

The language errors live in ``scoped_grammar.errors`` (the lowest layer);
they are re-exported here so callers import every error from one place::

    ScopedError
    ├── ScopeError (ScopeSyntaxError, UnknownSiteError, ...)   bad scope text
    ├── ConfigError                                            bad config file or option
    ├── GatewayError                                           a request refused (has .status)
    ├── ClientDisconnected                                     the client went away mid-request
    └── Failure                                                an upstream call got no usable answer
        ├── Refused      "refused"  the site refused the connection (nothing sent)
        ├── TimedOut     "timeout"  no connection, or the site fell silent
        ├── Reset        "reset"    the connection broke during the exchange
        ├── Skipped      "skipped"  not tried: the site's circuit is open
        └── CallError    "error"    anything else: a bad URL, TLS, a body too large...
            └── BodyTooLarge

Each failure class carries what the policies decide on, so no caller
compares strings: ``outcome`` (what ``X-Scope-Sites`` reports),
``retryable`` (the same site may be tried again at once), ``counts`` (the
site's circuit counts it as "not there"); each instance says whether it was
``sent`` (the site may have processed the request: the non-idempotent rule).
"""

from typing import ClassVar

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
    "BodyTooLarge",
    "CallError",
    "ClientDisconnected",
    "ConfigError",
    "DuplicateServiceError",
    "Failure",
    "GatewayError",
    "Refused",
    "Reset",
    "ScopeError",
    "ScopeSyntaxError",
    "ScopeTooLongError",
    "ScopedError",
    "Skipped",
    "TimedOut",
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


class ClientDisconnected(ScopedError):
    """The client closed its connection before its request body was read.

    Raised by a front end's body stream; the upstream call that was reading
    it ends (its site reports ``reset``) and nothing is answered."""


class Failure(ScopedError):
    """An upstream call that got no usable HTTP answer (the base of every kind)."""

    outcome: ClassVar[str] = "error"
    """What ``X-Scope-Sites`` and the logs report for it."""
    retryable: ClassVar[bool] = False
    """Whether the same site may be tried again at once (when not ``sent``)."""
    counts: ClassVar[bool] = True
    """Whether the site's circuit counts it as "the site is not there"."""

    def __init__(self, detail: str, sent: bool = False) -> None:
        super().__init__(f"{self.outcome}: {detail}")
        self.detail = detail
        self.sent = sent
        """The site may have processed the request (it was sent, at least in part)."""

    @property
    def kind(self) -> str:
        """The outcome, as reported (``refused``, ``timeout``, ...)."""
        return self.outcome


class Refused(Failure):
    """The site refused the connection: it surely did nothing, and a
    restarting service may accept the next one."""

    outcome = "refused"
    retryable = True


class TimedOut(Failure):
    """No connection within the connect timeout, or the site stayed silent
    longer than the total timeout. Not retried: on a cut WAN link that only
    doubles the wait before a ``|`` fails over."""

    outcome = "timeout"


class Reset(Failure):
    """The connection broke during the exchange."""

    outcome = "reset"


class Skipped(Failure):
    """Not tried: the site's circuit is open. Says nothing new about the site."""

    outcome = "skipped"
    counts = False


class CallError(Failure):
    """Any other failed call: a URL that cannot be called, a TLS handshake
    that failed, no credentials at the site, too many calls in flight..."""


class BodyTooLarge(CallError):
    """A body passed a size bound while being read."""

    def __init__(self, limit: int, sent: bool = True) -> None:
        super().__init__(f"more than {limit} bytes", sent)
        self.limit = limit
