"""``scoped lab``: the multi-site lab of real OpenStack on 127.0.0.1, with
scoped in front of every site (deploy/lab/ in the source checkout).

The lab itself is the ``deploy/lab/lab`` bash script; this module finds it
in the checkout this package runs from (``cli/scoped_cli`` -> ``deploy/lab``)
and runs it with ``LAB_DIR`` set, its output (the
progress lines) going straight to the terminal. A wheel install has no
deploy/ folder: the lab needs a source checkout.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from scoped.errors import ScopedError

ACTIONS = ("up", "down", "status")
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


def run(action: str, directory: str | Path, sites: Sequence[str] = ()) -> int:
    """Run the lab script: its output goes to this process's stdout/stderr.

    Returns its exit status. On Ctrl-C the script (in the same process group,
    so it got the signal too) is left to stop what it started, then 130.
    """
    argv = command(action, directory, sites)
    env = dict(os.environ, LAB_DIR=str(Path(directory).resolve()))
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
