"""Debian packages some tests run for real (haproxy, memcached): installed
when missing and this is root with apt-get (CI, whose fresh machine has
them only after the lab installs them), else the test is skipped, or fails
where end-to-end tests must run (``SCOPED_REQUIRE_E2E``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REQUIRE_ENV = "SCOPED_REQUIRE_E2E"


def require_binary(path: str, package: str, why: str) -> str:
    """``path``, installing ``package`` first if it is missing and we can;
    else a skip (a failure under ``SCOPED_REQUIRE_E2E``) saying ``why``."""
    if not os.path.exists(path) and shutil.which("apt-get") and os.geteuid() == 0:
        _apt_install(package)
    if os.path.exists(path):
        return path
    reason = f"{why}, and {path} is missing (apt-get install {package})"
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{reason}; {REQUIRE_ENV} is set (CI), so this is a failure")
    pytest.skip(reason)


def _apt_install(package: str) -> None:
    """As deploy/lab/lab's install_system: the package's own service is not
    started (policy-rc.d 101), and an apt lock held by another install is
    waited for."""
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"]
    install = [*apt, "install", "-y", "--no-install-recommends", package]
    try:
        for step in (install, [*apt, "update"], install):  # stale lists: update, once
            run = subprocess.run(step, env=env, capture_output=True, timeout=900, check=False)
            if step is install and run.returncode == 0:
                break
    finally:
        if ours:
            policy.unlink(missing_ok=True)
