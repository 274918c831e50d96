"""The lab's WAN: what the link emulator (links.py) is told, and what it keeps.

Three files under ``$LAB_DIR/links/``:

``forwards``
    Written by ``deploy/lab/lab up``: one line per cross-site TCP path,
    ``FROM TO LISTEN TARGET WHAT`` (site FROM reaches site TO's port TARGET at
    127.0.0.1:LISTEN; WHAT names it: ``gateway``, ``identity``, ...). The
    lab script owns the port numbers; the emulator only forwards.
``wan.yaml``
    The WAN given with ``scoped lab up --wan FILE`` (absent: :data:`DEFAULT_WAN`).
    Links not listed get the file's top-level ``delay``/``jitter``/``bandwidth``.
``state.json``
    Every link as it is now (delays, jitter, bandwidth, up or cut), written by
    the emulator after each change, read back when it starts again, and shown
    by ``scoped lab status``.

A WAN file::

    delay: 50            # ms one way, each direction, for a pair not listed
    jitter: 0.1          # fraction of the delay, +-, per chunk (default 0.1)
    bandwidth: null      # Mbit/s each direction (default: no cap)
    links:
      - between: [Berlin, Denver]
        delay: 75        # or [70, 80]: Berlin->Denver, Denver->Berlin
        bandwidth: 100   # or [100, 20]; null: no cap
        jitter: 0.05

Errors are :class:`WanError` (a ScopedError: exit status 2) naming the file,
the key and what was expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from scoped.errors import ScopedError

MODES = ("blackhole", "refuse")
"""How a cut link behaves: a real partition (SYNs and bytes vanish) or a
refusing one (ECONNREFUSED, RST)."""

DEFAULT_MODE = "blackhole"
MAX_DELAY_MS = 60_000.0
MAX_BANDWIDTH_MBIT = 100_000.0

DEFAULT_WAN_NAME = "default"
"""``--wan default``: back to :data:`DEFAULT_WAN`."""
DEFAULT_WAN = """\
# scoped's lab WAN when `scoped lab up` is given no --wan (cli/scoped_cli/wan.py)
delay: 50          # ms one way, a pair not listed below (e.g. a site added later)
jitter: 0.1
links:
  - between: [Berlin, Denver]
    delay: 75
  - between: [Berlin, Paris]
    delay: 5
  - between: [Denver, Paris]
    delay: 75
"""

_TOP_KEYS = ("delay", "jitter", "bandwidth", "links")
_LINK_KEYS = ("between", "delay", "jitter", "bandwidth")


class WanError(ScopedError):
    """A WAN file, a links file or a link command that cannot be used."""


@dataclass(frozen=True)
class Link:
    """One link (an unordered pair of sites), as it is now.

    ``a`` and ``b`` are in the lab's site order; ``delay`` and ``bandwidth``
    are (a->b, b->a). ``cut`` is None while the link is up, else its mode.
    """

    a: str
    b: str
    delay: tuple[float, float]
    jitter: float
    bandwidth: tuple[float | None, float | None] = (None, None)
    cut: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sites": [self.a, self.b],
            "delay_ms": list(self.delay),
            "jitter": self.jitter,
            "bandwidth_mbit": list(self.bandwidth),
            "state": "up" if self.cut is None else "cut",
            "mode": self.cut,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Link:
        a, b = data["sites"]
        da, db = data["delay_ms"]
        ba, bb = data.get("bandwidth_mbit", [None, None])
        cut = data.get("mode") if data.get("state") == "cut" else None
        if cut is not None and cut not in MODES:
            raise ValueError(f"bad mode {cut!r}")
        return cls(
            str(a),
            str(b),
            (float(da), float(db)),
            float(data["jitter"]),
            (None if ba is None else float(ba), None if bb is None else float(bb)),
            cut,
        )

    def describe(self) -> str:
        """One line for ``scoped lab status``: ``->`` is a to b, ``<-`` b to a."""

        def pair(values: Sequence[float | None], unit: str) -> str:
            shown = ["none" if v is None else f"{v:g} {unit}" for v in values]
            if shown[0] == shown[1]:
                return "no cap" if values[0] is None else f"{shown[0]} each way"
            return f"{shown[0]} ->, {shown[1]} <-"

        state = "up" if self.cut is None else f"CUT ({self.cut})"
        return (
            f"{self.a + ' <-> ' + self.b:<22} delay {pair(self.delay, 'ms'):<22} "
            f"jitter {self.jitter:<5.0%} bandwidth {pair(self.bandwidth, 'Mbit/s'):<26} {state}"
        )


@dataclass(frozen=True)
class Forward:
    """One cross-site TCP path: ``src`` reaches ``dst``'s ``target`` port at ``listen``."""

    src: str
    dst: str
    listen: int
    target: int
    what: str


@dataclass(frozen=True)
class Wan:
    """A parsed WAN file: defaults, and links given explicitly."""

    delay: float
    jitter: float
    bandwidth: float | None
    links: tuple[Link, ...]

    def sites(self) -> set[str]:
        return {s for link in self.links for s in (link.a, link.b)}

    def link(self, a: str, b: str) -> Link:
        """The link between a and b (in that order) as this WAN sets it up."""
        for link in self.links:
            if (link.a, link.b) == (a, b):
                return link
            if (link.b, link.a) == (a, b):
                return replace(
                    link,
                    a=a,
                    b=b,
                    delay=(link.delay[1], link.delay[0]),
                    bandwidth=(link.bandwidth[1], link.bandwidth[0]),
                )
        return Link(a, b, (self.delay, self.delay), self.jitter, (self.bandwidth, self.bandwidth))


# ---- checking values ----------------------------------------------------------


def delay_value(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WanError(f"{where}: expected a delay in ms (a number), got {value!r}")
    if not 0 <= value <= MAX_DELAY_MS:
        raise WanError(f"{where}: expected a delay from 0 to {MAX_DELAY_MS:g} ms, got {value!r}")
    return float(value)


def jitter_value(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise WanError(f"{where}: expected a jitter from 0 to 1 (a fraction), got {value!r}")
    return float(value)


def bandwidth_value(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WanError(f"{where}: expected Mbit/s (a number) or null, got {value!r}")
    if not 0 < value <= MAX_BANDWIDTH_MBIT:
        raise WanError(
            f"{where}: expected a bandwidth above 0 and at most {MAX_BANDWIDTH_MBIT:g} Mbit/s, "
            f"got {value!r}"
        )
    return float(value)


def _both(value: Any, where: str, check: Any) -> tuple[Any, Any]:
    """One value for both directions, or a list of two: a->b, b->a."""
    if isinstance(value, list):
        if len(value) != 2:
            raise WanError(f"{where}: expected one value, or two (a->b, b->a), got {value!r}")
        return check(value[0], where), check(value[1], where)
    one = check(value, where)
    return one, one


def check_site(name: Any, sites: Sequence[str] | None, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise WanError(f"{where}: expected a site name, got {name!r}")
    if sites is not None and name not in sites:
        raise WanError(f"{where}: unknown site {name!r} (the lab's sites: {', '.join(sites)})")
    return name


def _only(data: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    for key in data:
        if key not in keys:
            raise WanError(f"{where}: unknown key {key!r} (expected one of: {', '.join(keys)})")


def parse_wan(text: str, source: str, sites: Sequence[str] | None = None) -> Wan:
    """Parse a WAN file's text; ``sites`` (when given) are the only names allowed."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "cannot be read"
        raise WanError(f"{source}: not valid YAML{at}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WanError(f"{source}: expected a mapping with keys {', '.join(_TOP_KEYS)}")
    _only(data, _TOP_KEYS, source)
    delay = delay_value(data.get("delay", 50), f"{source}: delay")
    jitter = jitter_value(data.get("jitter", 0.1), f"{source}: jitter")
    bandwidth = bandwidth_value(data.get("bandwidth"), f"{source}: bandwidth")
    entries = data.get("links") or []
    if not isinstance(entries, list):
        raise WanError(f"{source}: links: expected a list of {{between: [A, B], delay: MS}}")
    links: list[Link] = []
    seen: set[frozenset[str]] = set()
    for i, entry in enumerate(entries):
        where = f"{source}: links[{i}]"
        if not isinstance(entry, dict):
            raise WanError(f"{where}: expected a mapping like {{between: [A, B], delay: 75}}")
        _only(entry, _LINK_KEYS, where)
        pair = entry.get("between")
        if not isinstance(pair, list) or len(pair) != 2:
            raise WanError(f"{where}.between: expected two site names, as in [Berlin, Denver]")
        a = check_site(pair[0], sites, f"{where}.between")
        b = check_site(pair[1], sites, f"{where}.between")
        if a == b:
            raise WanError(f"{where}.between: expected two different sites, got {a!r} twice")
        if frozenset((a, b)) in seen:
            raise WanError(f"{where}.between: the link {a}-{b} is given twice")
        seen.add(frozenset((a, b)))
        links.append(
            Link(
                a,
                b,
                _both(entry.get("delay", delay), f"{where}.delay", delay_value),
                jitter_value(entry.get("jitter", jitter), f"{where}.jitter"),
                _both(entry.get("bandwidth", bandwidth), f"{where}.bandwidth", bandwidth_value),
            )
        )
    return Wan(delay, jitter, bandwidth, tuple(links))


def load_wan(path: str | Path, sites: Sequence[str] | None = None) -> Wan:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise WanError(f"--wan {path}: cannot be read: {err.strerror or err}") from None
    return parse_wan(text, str(path), sites)


def default_wan() -> Wan:
    return parse_wan(DEFAULT_WAN, "the default WAN")


# ---- the lab's files ----------------------------------------------------------


@dataclass(frozen=True)
class LabFiles:
    """Where a lab's link files are."""

    dir: Path

    @property
    def links(self) -> Path:
        return self.dir / "links"

    @property
    def forwards(self) -> Path:
        return self.links / "forwards"

    @property
    def wan(self) -> Path:
        return self.links / "wan.yaml"

    @property
    def state(self) -> Path:
        return self.links / "state.json"

    @property
    def socket(self) -> Path:
        return self.dir / "run" / "links.sock"

    def current_wan(self, sites: Sequence[str] | None = None) -> Wan:
        return load_wan(self.wan, sites) if self.wan.exists() else default_wan()


def parse_forwards(text: str, source: str) -> list[Forward]:
    forwards: list[Forward] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 5 or not words[2].isdigit() or not words[3].isdigit():
            raise WanError(f"{source}, line {number}: expected FROM TO LISTEN TARGET WHAT")
        src, dst, listen, target, what = words
        if src == dst:
            raise WanError(f"{source}, line {number}: a site does not go through a link to itself")
        forwards.append(Forward(src, dst, int(listen), int(target), what))
    return forwards


def load_forwards(files: LabFiles) -> list[Forward]:
    try:
        text = files.forwards.read_text()
    except FileNotFoundError:
        raise WanError(
            f"no links in {files.dir}: {files.forwards} is missing (scoped lab up --dir)"
        ) from None
    return parse_forwards(text, str(files.forwards))


def site_order(forwards: Iterable[Forward]) -> list[str]:
    """The sites, in the order the forwards file names them (the lab's site order)."""
    order: list[str] = []
    for fwd in forwards:
        for name in (fwd.src, fwd.dst):
            if name not in order:
                order.append(name)
    return order


def pairs(sites: Sequence[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(sites) for b in sites[i + 1 :]]


def load_state(files: LabFiles) -> dict[frozenset[str], Link]:
    """The links as last saved (empty when there is no state or it is unreadable)."""
    try:
        data = json.loads(files.state.read_text())
        links = [Link.from_json(item) for item in data["links"]]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {frozenset((link.a, link.b)): link for link in links}


def save_state(files: LabFiles, links: Iterable[Link]) -> None:
    files.links.mkdir(parents=True, exist_ok=True)
    tmp = files.state.with_name(f".state.{os.getpid()}.json")
    tmp.write_text(json.dumps({"links": [link.to_json() for link in links]}, indent=1) + "\n")
    tmp.replace(files.state)


def plan_links(
    sites: Sequence[str], wan: Wan, saved: Mapping[frozenset[str], Link], reset: bool
) -> list[Link]:
    """Every link between ``sites``: as saved (unless ``reset``), else as ``wan`` says."""
    links: list[Link] = []
    for a, b in pairs(sites):
        old = saved.get(frozenset((a, b)))
        if old is None or reset:
            links.append(wan.link(a, b))
        elif (old.a, old.b) == (a, b):
            links.append(old)
        else:
            links.append(
                replace(
                    old,
                    a=a,
                    b=b,
                    delay=(old.delay[1], old.delay[0]),
                    bandwidth=(old.bandwidth[1], old.bandwidth[0]),
                )
            )
    return links
