"""``scoped lab``: the multi-site lab of real OpenStack on 127.0.0.1, with
scoped in front of every site (deploy/lab/ in the source checkout).

The lab itself is the ``deploy/lab/lab`` bash script; this module finds it
in the checkout this package runs from (``cli/scoped_cli`` -> ``deploy/lab``)
and runs it with ``LAB_DIR`` set, its output (the
progress lines) going straight to the terminal. A wheel install has no
deploy/ folder: the lab needs a source checkout.

The lab's sites reach each other through its link emulator (links.py): ``up
--wan FILE`` is checked here first (wan.py), then handed to the script as
``LAB_WAN``; ``scoped lab link cut|heal|set`` talks to the running emulator.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scoped.errors import ScopedError

from .links import LinksNotRunning, send
from .wan import (
    DEFAULT_MODE,
    DEFAULT_WAN_NAME,
    MODES,
    LabFiles,
    Link,
    WanError,
    bandwidth_value,
    check_site,
    delay_value,
    jitter_value,
    load_forwards,
    load_wan,
    site_order,
)

ACTIONS = ("up", "down", "status")
LINK_ACTIONS = ("cut", "heal", "set")
DEFAULT_SITES = ("Berlin", "Denver", "Paris")  # deploy/lab/lab's DEFAULT_SITES
EXIT_FAILED = 1
_SITE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class LabError(ScopedError):
    """The lab cannot be run as asked (no checkout, a bad site name, no lab there)."""


def lab_home() -> Path:
    """deploy/lab/ of the checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "deploy" / "lab"


def lab_script() -> Path:
    """The lab's entry script; a clear error when scoped is not run from a checkout."""
    home = lab_home()
    script = home / "lab"
    if not script.is_file():
        raise LabError(
            f"the lab is not here: {home} does not exist. `scoped lab` runs deploy/lab/ "
            "of a source checkout (git clone, then pip install -e .); an installed wheel "
            "has no deploy/ folder"
        )
    return script


def check_sites(sites: Sequence[str]) -> None:
    for name in sites:
        if not _SITE_NAME.fullmatch(name):
            raise LabError(
                f"bad site name {name!r}: a letter, then letters, digits, '_' or '-' "
                "(it is also the Keystone region)"
            )


def command(action: str, directory: str | Path, sites: Sequence[str] = ()) -> list[str]:
    """The lab command line for ``action``; checks what can be checked first."""
    if action not in ACTIONS:
        raise LabError(f"unknown lab action {action!r} (one of {', '.join(ACTIONS)})")
    check_sites(sites)
    path = Path(directory)
    if action != "up" and not path.is_dir():
        raise LabError(f"no lab in {path}: the directory does not exist (scoped lab up --dir)")
    if path.exists() and not path.is_dir():
        raise LabError(f"--dir {path} is not a directory")
    return ["bash", str(lab_script()), action, *sites]


def known_sites(directory: str | Path, sites: Sequence[str] = ()) -> list[str]:
    """The lab's sites once ``up`` has run with ``sites``: those it has, and those named
    (the default ones for a new lab given none)."""
    path = Path(directory)
    found = sorted(
        (int((d / "index").read_text()), (d / "name").read_text().strip())
        for d in (path.iterdir() if path.is_dir() else ())
        if (d / "index").is_file() and (d / "name").is_file()
    )
    names = [name for _, name in found]
    for name in sites or (() if names else DEFAULT_SITES):
        if name not in names:
            names.append(name)
    return names


def check_wan(wan: str | Path, directory: str | Path, sites: Sequence[str] = ()) -> str:
    """A WAN file for ``up``: readable, valid, naming only the lab's sites (or ``default``)."""
    if str(wan) == DEFAULT_WAN_NAME:
        return DEFAULT_WAN_NAME
    load_wan(wan, known_sites(directory, sites))
    return str(Path(wan).resolve())


def run(
    action: str, directory: str | Path, sites: Sequence[str] = (), wan: str | Path | None = None
) -> int:
    """Run the lab script: its output goes to this process's stdout/stderr.

    Returns its exit status. On Ctrl-C the script (in the same process group,
    so it got the signal too) is left to stop what it started, then 130.
    """
    argv = command(action, directory, sites)
    env = dict(os.environ, LAB_DIR=str(Path(directory).resolve()))
    env.pop("LAB_WAN", None)
    if wan is not None:
        if action != "up":
            raise LabError("--wan goes with up")
        env["LAB_WAN"] = check_wan(wan, directory, sites)
    with subprocess.Popen(argv, env=env) as proc:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                proc.wait()
            finally:
                signal.signal(signal.SIGINT, previous)
            return 130


# ---- scoped lab link ---------------------------------------------------------------


def _pair(value: str | None, check: Callable[[Any, str], Any], name: str) -> list[Any] | None:
    """``--delay 75`` (both ways) or ``--delay 70,80`` (A->B, B->A); ``none`` for no cap."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) > 2 or not all(parts):
        raise LabError(f"{name} {value!r}: expected one value, or two: A->B,B->A")
    values: list[Any] = []
    for part in parts:
        if part.lower() in ("none", "null", "-") and name == "--bandwidth":
            number: float | None = None
        else:
            try:
                number = float(part)
            except ValueError:
                raise LabError(f"{name} {value!r}: {part!r} is not a number") from None
        values.append(check(number, name))
    return values * 2 if len(values) == 1 else values


def link_message(
    action: str,
    a: str,
    b: str,
    *,
    delay: str | None = None,
    jitter: str | None = None,
    bandwidth: str | None = None,
    mode: str | None = None,
) -> dict[str, object]:
    """The emulator command for ``scoped lab link ACTION A B ...``; bad input is a LabError."""
    if action not in LINK_ACTIONS:
        raise LabError(f"unknown link action {action!r} (one of {', '.join(LINK_ACTIONS)})")
    msg: dict[str, object] = {"cmd": action, "a": a, "b": b}
    if action == "cut":
        chosen = mode or DEFAULT_MODE
        if chosen not in MODES:
            raise LabError(f"--mode {chosen!r}: expected {' or '.join(MODES)}")
        msg["mode"] = chosen
    elif action == "set":
        given = {
            "delay": _pair(delay, delay_value, "--delay"),
            "bandwidth": _pair(bandwidth, bandwidth_value, "--bandwidth"),
        }
        msg.update({k: v for k, v in given.items() if v is not None})
        if jitter is not None:
            try:
                msg["jitter"] = jitter_value(float(jitter), "--jitter")
            except ValueError:
                raise LabError(f"--jitter {jitter!r}: expected a fraction from 0 to 1") from None
        if len(msg) == 3:
            raise LabError("link set: give --delay, --jitter and/or --bandwidth")
    return msg


def link(action: str, directory: str | Path, a: str, b: str, **options: str | None) -> int:
    """``scoped lab link cut|heal|set``: change a link of the running lab at once."""
    path = Path(directory)
    if not path.is_dir():
        raise LabError(f"no lab in {path}: the directory does not exist (scoped lab up --dir)")
    msg = link_message(action, a, b, **options)
    files = LabFiles(path.resolve())
    sites = site_order(load_forwards(files))
    where = f"link {a} {b}"
    check_site(a, sites, where)
    check_site(b, sites, where)
    if a == b:
        raise LabError(f"{where}: a link joins two different sites")
    try:
        answer = send(files, msg)
    except LinksNotRunning as err:
        print(f"scoped lab: {err}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError) as err:
        print(f"scoped lab: the link emulator did not answer: {err}", file=sys.stderr)
        return EXIT_FAILED
    if not answer.get("ok"):
        raise WanError(f"{where}: {answer.get('error')}")
    for item in answer["links"]:
        state = Link.from_json(item)
        if {state.a, state.b} == {a, b}:
            print(state.describe())
    return 0
