"""The exceptions of scoped.

Every error scoped raises on purpose derives from :class:`ScopedError`, so a
caller (the CLI, a gateway, the OSC plugin) can catch one type and show the
message; anything else escaping is a bug. The root lives here, in the lowest
layer, because the grammar package must not depend on the core; ``scoped.errors``
re-exports it and adds the errors of the core.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from difflib import get_close_matches


class ScopedError(Exception):
    """Root of every error scoped raises on purpose."""


class ScopeError(ScopedError):
    """A scope that cannot be used: its text, and where in it the fault lies.

    ``str(err)`` is the full message an operator sees: what is wrong, where
    (line and column, 1-based), and the offending line with a caret under the
    fault.
    """

    def __init__(
        self,
        message: str,
        text: str | None = None,
        pos: int | None = None,
    ) -> None:
        self.message = message
        self.text = text
        self.pos = pos
        self.line, self.column = _line_column(text, pos)
        super().__init__(self.render())

    def render(self) -> str:
        if self.text is None or self.pos is None:
            return f"bad scope: {self.message}"
        head = f"bad scope at line {self.line}, column {self.column}: {self.message}"
        return f"{head}\n{caret_context(self.text, self.pos)}"


class ScopeSyntaxError(ScopeError):
    """The text does not follow the grammar; ``expected`` says what would."""

    def __init__(
        self,
        message: str,
        text: str,
        pos: int,
        expected: Sequence[str] = (),
    ) -> None:
        self.expected = tuple(expected)
        super().__init__(message, text, pos)


class ScopeTooLongError(ScopeError):
    """Rejected before parsing: a scope is a few KiB of text at most."""


class UnknownServiceError(ScopeError):
    """A key that names no service type, alias or project known to os-service-types."""

    def __init__(
        self, name: str, suggestions: Sequence[str], text: str | None = None, pos: int | None = None
    ) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        super().__init__(f"unknown service {name!r}{_did_you_mean(self.suggestions)}", text, pos)


class DuplicateServiceError(ScopeError):
    """Two keys of one scope name the same service (``nova`` and ``compute``)."""


class UnknownSiteError(ScopeError):
    """A site name that is not in the site registry."""

    def __init__(
        self,
        name: str,
        suggestions: Sequence[str],
        text: str | None = None,
        pos: int | None = None,
    ) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        super().__init__(f"unknown site {name!r}{_did_you_mean(self.suggestions)}", text, pos)


def nearest(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The known names closest to ``name``, best first (case-insensitive)."""
    by_lower: dict[str, str] = {}
    for k in known:
        by_lower.setdefault(k.lower(), k)
    close = get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.5)
    return [by_lower[c] for c in close]


def caret_context(text: str, pos: int) -> str:
    """The line of ``text`` holding ``pos``, and a caret under that position."""
    pos = max(0, min(pos, len(text)))
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    if end == -1:
        end = len(text)
    line = text[start:end]
    col = pos - start
    # Keep very long lines readable: show a window around the fault.
    width = 100
    if len(line) > width:
        lo = max(0, col - width // 2)
        hi = min(len(line), lo + width)
        prefix = "..." if lo > 0 else ""
        suffix = "..." if hi < len(line) else ""
        line = prefix + line[lo:hi] + suffix
        col = col - lo + len(prefix)
    return f"  {line}\n  {' ' * col}^"


def _did_you_mean(suggestions: Sequence[str]) -> str:
    if not suggestions:
        return ""
    if len(suggestions) == 1:
        return f"; did you mean {suggestions[0]!r}?"
    quoted = ", ".join(repr(s) for s in suggestions[:-1])
    return f"; did you mean {quoted} or {suggestions[-1]!r}?"


def _line_column(text: str | None, pos: int | None) -> tuple[int | None, int | None]:
    if text is None or pos is None:
        return None, None
    pos = max(0, min(pos, len(text)))
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column
