"""What ``scoped explain`` shows: a scope's canonical text and its plan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scoped_grammar import STAR, canonical, parse

from .errors import ScopedError
from .plan import All, Call, Node, Plan, plan_scope


@dataclass(frozen=True)
class Explanation:
    """A scope checked against a registry: its canonical text and its plan."""

    canonical: str
    plan: Plan

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object of docs/design.md §8."""
        return {"canonical": self.canonical, "plan": self.plan.to_json()}

    def render(self) -> str:
        """The human-readable form: one block per service, children indented."""
        lines = [f"scope: {self.canonical}"]
        entries: list[tuple[str, Node]] = list(self.plan.services.items())
        if self.plan.default is not None:
            entries.append((STAR, self.plan.default))
        for service, node in entries:
            label = "* (every other service)" if service == STAR else service
            lines.extend(_node_lines(node, f"{label}: ", "  "))
        return "\n".join(lines)


def site_names(value: str) -> list[str]:
    """A site registry given as ``Berlin,Denver,Paris`` (``--sites`` of both
    CLIs); a clear error for an empty or repeated name."""
    names = [n.strip() for n in value.split(",")]
    if any(not n for n in names):
        raise ScopedError(
            f"--sites takes site names separated by commas, as in Berlin,Denver; got {value!r}"
        )
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ScopedError(f"--sites names {n!r} twice")
        seen.add(n)
    return names


def explain(text: str, sites: Sequence[str] | None = None, home: str | None = None) -> Explanation:
    """Parse ``text`` and plan it against ``sites`` with ``home`` as the default."""
    scope = parse(text)
    return Explanation(canonical(scope), plan_scope(scope, sites, home, text=text))


def _node_lines(node: Node, head: str, indent: str) -> list[str]:
    mark = " (optional)" if node.optional else ""
    if isinstance(node, Call):
        return [f"{head}{node.site}{mark}"]
    what = "all of, concurrently, merged" if isinstance(node, All) else "first success, in order"
    lines = [f"{head}{what}{mark}"]
    for child in node.children:
        lines.extend(_node_lines(child, f"{indent}- ", indent + "  "))
    return lines
