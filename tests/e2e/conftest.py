"""The multi-site lab for end-to-end tests: started once per run, stopped after.

``SCOPED_LAB_DIR`` names the lab's directory (default: ``lab/`` in the
checkout, which ``./dev demo`` uses too, so a lab already up is reused and
left as it was found).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SITES = ("Berlin", "Denver", "Paris")
REQUIRE_ENV = "SCOPED_REQUIRE_E2E"
"""Set by .ci/run: a machine that cannot run the lab fails instead of skipping."""


@dataclass
class Lab:
    dir: Path
    env: dict[str, str]

    def scoped(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "scoped"), "lab", *args, "--dir", str(self.dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def openstack(
        self, *args: str, cloud: str = "Berlin", timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "openstack"), "--os-cloud", cloud, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )

    def gateway(self, site: str) -> str | None:
        """Base URL of a site's gateway (None for a site that runs the filter)."""
        config = yaml.safe_load((self.dir / site.lower() / "scoped.yaml").read_text())
        url = config["sites"][site]["endpoints"]["compute"]
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" if parts.path.startswith("/compute") else None


def pattern_file(path: Path, size: int, algorithm: str) -> str:
    """Write ``size`` bytes of a repeating pattern to ``path`` (an image for
    an upload); the hex digest of what was written."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    block = bytes(range(256)) * 4096
    with path.open("wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
            digest.update(block)
    return digest.hexdigest()


def _running(lab: Lab) -> bool:
    out = lab.scoped("status", timeout=120)
    return out.returncode == 0 and all(s in out.stdout for s in SITES) and "down" not in out.stdout


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        why = (
            "the end-to-end tests need the lab: real OpenStack sites that deploy/lab/lab "
            "installs with apt-get as root, on Debian (this machine has "
            + ("no apt-get" if shutil.which("apt-get") is None else "apt-get, but not as root")
            + ")"
        )
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{why}; {REQUIRE_ENV} is set (CI), so this is a failure")
        pytest.skip(f"{why}; they run in CI (.ci/run sets {REQUIRE_ENV}=1)")
    path = Path(os.environ.get("SCOPED_LAB_DIR", ROOT / "lab"))
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(path / "clouds.yaml")}
    for key in [k for k in env if k.startswith("OS_") and k != "OS_CLIENT_CONFIG_FILE"]:
        del env[key]
    found = Lab(path, env)
    was_up = (path / "clouds.yaml").exists() and _running(found)
    if not was_up:
        up = found.scoped("up", "--sites", ",".join(SITES))
        if up.returncode != 0:
            pytest.fail(f"scoped lab up failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}")
    yield found
    if not was_up:
        found.scoped("down", timeout=300)
