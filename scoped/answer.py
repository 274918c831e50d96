"""The values a plan's evaluation produces: what each site did, and the
answer of a plan node (one site's, merged, or a failure to be worded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from .merge import Collection
from .upstream import Reply


class Verdict(Enum):
    OK = "ok"
    ABSENT = "absent"
    """404: "that site doesn't have it"."""
    REFUSED = "refused"
    """Another 4xx: the site answered, and said no."""
    FAILED = "failed"
    """No answer, a 5xx, or an answer that could not be used."""


def verdict_of(status: int) -> Verdict:
    if status < 400:
        return Verdict.OK
    if status == 404:
        return Verdict.ABSENT
    if status < 500:
        return Verdict.REFUSED
    return Verdict.FAILED


class SiteReport(NamedTuple):
    """One site tried: ``SITE=OUTCOME;t=MILLISECONDS`` in ``X-Scope-Sites``.

    ``status`` is the HTTP status the site answered, None when it gave none
    (``outcome`` then names the failure: refused, timeout, ...).

    A named tuple, as :class:`~scoped.policies.SiteCall`: one is made per
    site call, and a frozen dataclass's ``__init__`` (``object.__setattr__``
    per field) cost 1.3 µs of it where this costs 0.5 (timeit, here)."""

    site: str
    outcome: str
    ms: float
    detail: str = ""
    status: int | None = None

    def entry(self) -> str:
        return f"{self.site}={self.outcome};t={self.ms:.1f}"


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Why a plan node failed, for :mod:`scoped.respond` to word: what
    failed, why the evaluation stopped, and the answers of the sites where a
    write was done (kept: nothing is undone)."""

    what: str
    why: str = ""
    done: tuple[Answer, ...] = ()
    outcomes: bool = True
    """Whether the message lists each site's outcome (and the body a ``sites`` list)."""
    undone: tuple[str, ...] = ()
    """Sites where a create was done, then undone (a compensating delete)."""


@dataclass
class Answer:
    """The result of running a plan node."""

    verdict: Verdict
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    reports: list[SiteReport] = field(default_factory=list)
    site: str | None = None
    reply: Reply | None = None
    """An upstream answer whose body is still unread (streamed to the client)."""
    body: bytes | None = None
    collection: Collection | None = None
    """A merged listing, rendered by respond."""
    safe: bool = False
    """The site surely did not process the request (failover is allowed)."""
    shortfall: Shortfall | None = None
    """Set when the node failed: the error body is worded from it."""

    def discard(self) -> None:
        if self.reply is not None:
            self.reply.release()
            self.reply = None

    @property
    def timed_out(self) -> bool:
        return bool(self.reports) and self.reports[-1].outcome == "timeout"
