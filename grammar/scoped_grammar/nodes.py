"""The scope AST: frozen, hashable values.

A scope maps official service types to site expressions. The classes keep
their invariants by construction (checked in ``__post_init__``): an ``AllOf``
never directly holds an ``AllOf``, a ``FirstOf`` never a ``FirstOf``, an
``Opt`` never an ``Opt``, and a chain has at least two items. That is what makes
the canonical text a faithful, minimal printing of any AST, so that
``parse(canonical(x)) == x`` holds for every value one can build. Use
:func:`all_of`, :func:`first_of` and :func:`opt` to build expressions from
parts; they flatten.

Duplicates are kept (``A&A`` stays two items): the AST says what was written,
the planner decides what it means.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TypeAlias

STAR = "*"
"""As a key: every service not named otherwise. As a site: every known site."""


@dataclass(frozen=True, slots=True)
class Site:
    """One site, by name."""

    name: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a site name cannot be empty")


@dataclass(frozen=True, slots=True)
class EverySite:
    """``*`` as a site: every site the registry knows, as a conjunction."""


@dataclass(frozen=True, slots=True)
class AllOf:
    """``a & b``: do it at every item (fan-out)."""

    items: tuple[Expr, ...]

    def __post_init__(self) -> None:
        _check_chain(self.items, AllOf)


@dataclass(frozen=True, slots=True)
class FirstOf:
    """``a | b``: try the items in order until one succeeds (failover)."""

    items: tuple[Expr, ...]

    def __post_init__(self) -> None:
        _check_chain(self.items, FirstOf)


@dataclass(frozen=True, slots=True)
class Opt:
    """``a?``: inside an ``&``, a failure of ``a`` does not fail the whole."""

    item: Expr

    def __post_init__(self) -> None:
        if isinstance(self.item, Opt):
            raise ValueError("Opt(Opt(x)) is written opt(x)")


Expr: TypeAlias = Site | EverySite | AllOf | FirstOf | Opt


def all_of(*items: Expr) -> Expr:
    """``items[0] & items[1] & ...``, flattened; one item is itself."""
    return _chain(items, AllOf)


def first_of(*items: Expr) -> Expr:
    """``items[0] | items[1] | ...``, flattened; one item is itself."""
    return _chain(items, FirstOf)


def opt(item: Expr) -> Opt:
    """``item?``; marking an optional item again changes nothing."""
    return item if isinstance(item, Opt) else Opt(item)


def key_order(key: str) -> tuple[bool, str]:
    """Canonical key order: service types sorted, ``*`` last."""
    return (key == STAR, key)


@dataclass(frozen=True)
class Scope(Mapping[str, Expr]):
    """A mapping from official service type (or ``*``) to a site expression.

    Entries are kept in canonical key order, so two scopes that bind the same
    services to the same expressions are equal whatever order they were
    written in.
    """

    entries: tuple[tuple[str, Expr], ...] = ()

    def __post_init__(self) -> None:
        keys = [k for k, _ in self.entries]
        ordered = sorted(set(keys), key=key_order)
        if keys != ordered:
            object.__setattr__(self, "entries", tuple(sorted(self.entries, key=_entry_order)))
            keys = [k for k, _ in self.entries]
            if len(set(keys)) != len(keys):
                raise ValueError("a scope names each service once")

    @classmethod
    def of(cls, mapping: Mapping[str, Expr]) -> Scope:
        return cls(tuple(mapping.items()))

    @cached_property
    def _index(self) -> dict[str, Expr]:
        return dict(self.entries)

    def __getitem__(self, key: str) -> Expr:
        return self._index[key]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __hash__(self) -> int:
        return hash(self.entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Scope):
            return self.entries == other.entries
        return NotImplemented

    @property
    def default(self) -> Expr | None:
        """The ``*`` entry: where services not named otherwise go."""
        return self._index.get(STAR)


def _entry_order(entry: tuple[str, Expr]) -> tuple[bool, str]:
    return key_order(entry[0])


def _check_chain(items: tuple[Expr, ...], kind: type) -> None:
    if len(items) < 2:
        raise ValueError(f"{kind.__name__} needs at least two items; use the item itself")
    if any(isinstance(i, kind) for i in items):
        raise ValueError(f"{kind.__name__} items are flat; build it with the helper")


def _chain(items: tuple[Expr, ...], kind: type[AllOf] | type[FirstOf]) -> Expr:
    if not items:
        raise ValueError("an expression needs at least one item")
    flat: list[Expr] = []
    for item in items:
        if isinstance(item, kind):
            flat.extend(item.items)
        else:
            flat.append(item)
    return flat[0] if len(flat) == 1 else kind(tuple(flat))
