"""End to end, *-DC: ``&`` writes with the real ``openstack`` CLI, exactly as
an operator types them, checked at every site directly (each site's own
cloud, no scope) and cleaned up so that nothing is left behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scoped.handles import read_handle

from .conftest import Lab, pattern_file

pytestmark = pytest.mark.e2e


def everything(lab: Lab) -> dict[str, list[str]]:
    """Every server and image of every site, by ID (a shared ID once per site)."""
    out = {}
    for kind, service in (("server", "nova"), ("image", "glance")):
        listed = lab.openstack(kind, "list", "-f", "json", "--os-scope", f"<{service}: *>")
        assert listed.returncode == 0, listed.stderr
        out[kind] = sorted(str(row["ID"]) for row in json.loads(listed.stdout))
    return out


@pytest.fixture(autouse=True)
def nothing_left_behind(lab: Lab) -> Iterator[None]:
    """After each test, every site holds exactly what it held before."""
    before = everything(lab)
    yield
    assert everything(lab) == before


def shown(lab: Lab, kind: str, ident: str, site: str) -> dict[str, object] | None:
    """``openstack KIND show IDENT`` at ``site`` itself; None if it is not there."""
    out = lab.openstack(kind, "show", ident, "-f", "json", cloud=site)
    if out.returncode != 0:
        assert "No " in out.stderr or "not found" in out.stderr.lower(), out.stderr
        return None
    data = json.loads(out.stdout)
    assert isinstance(data, dict)
    return data


def test_a_vm_booted_at_berlin_and_denver_is_one_handle(lab: Lab) -> None:
    name = f"vm-both-{os.getpid()}"
    scope = "<nova: Berlin&Denver, glance: Denver>"
    out = lab.openstack(
        "server", "create", name, "--flavor", "m1.tiny", "--image", "cirros-denver",
        "--network", "net1", "--wait", "-f", "json", "--os-scope", scope,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    server = json.loads(out.stdout)
    # One handle for both replicas (the CLI shows the server's known fields;
    # the answer's OS-SCOPE:sites says the same, checked in the core tests).
    replicas = read_handle(server["id"]) or {}
    try:
        assert server["status"] == "ACTIVE"
        assert set(replicas) == {"Berlin", "Denver"}
        for site, ident in replicas.items():
            at_site = shown(lab, "server", ident, site)
            assert at_site is not None, f"no replica at {site}"
            assert at_site["status"] == "ACTIVE"
            # Each replica on its own site's net1 (network ids differ by site).
            assert "net1" in str(at_site["addresses"])
            ports = lab.openstack(
                "port", "list", "--server", ident, "-f", "json", cloud=site
            )  # fmt: skip
            assert ports.returncode == 0 and json.loads(ports.stdout), ports.stderr
        # Looked up by name under the same scope, the replicas are one server.
        by_name = lab.openstack(
            "server", "show", name, "-f", "json", "--os-scope", "<nova: Berlin&Denver>"
        )  # fmt: skip
        assert by_name.returncode == 0, by_name.stderr
        assert read_handle(json.loads(by_name.stdout)["id"]) == replicas
        # Listed, each replica is its own item and says where it lives.
        listed = lab.openstack(
            "scope", "list", "servers", "-f", "json", "--os-scope", "<nova: Berlin&Denver>"
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        where = {row["ID"]: row["Site"] for row in json.loads(listed.stdout)}
        assert {where.get(ident) for ident in replicas.values()} == {"Berlin", "Denver"}
        assert all(where[ident] == site for site, ident in replicas.items())
    finally:
        gone = lab.openstack(
            "server", "delete", server["id"], "--wait", "--os-scope", "<nova: Berlin&Denver>",
            timeout=300,
        )  # fmt: skip
    assert gone.returncode == 0, gone.stderr
    for site, ident in replicas.items():
        assert shown(lab, "server", ident, site) is None, f"{site} kept {ident}"


def test_a_boot_where_one_site_lacks_the_flavor_creates_nothing(lab: Lab) -> None:
    flavor = f"m1.berlin-only-{os.getpid()}"
    made = lab.openstack(
        "flavor", "create", flavor, "--id", flavor, "--ram", "64", "--disk", "1", "--vcpus", "1",
        "--os-scope", "<nova: Berlin>",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    name = f"vm-nowhere-{os.getpid()}"
    try:
        out = lab.openstack(
            "server", "create", name, "--flavor", flavor, "--image", "cirros-denver",
            "--nic", "none", "--os-scope", "<nova: Berlin&Denver, glance: Denver>",
        )  # fmt: skip
        assert out.returncode != 0
        assert "Denver" in out.stderr and flavor in out.stderr, out.stderr
        assert "nothing was written" in out.stderr
        for site in ("Berlin", "Denver"):
            listed = lab.openstack("server", "list", "--name", name, "-f", "json", cloud=site)
            assert listed.returncode == 0 and json.loads(listed.stdout) == [], site
    finally:
        lab.openstack("flavor", "delete", flavor, "--os-scope", "<nova: Berlin>")


def test_an_image_replicated_to_three_sites_then_deleted_everywhere(
    lab: Lab, tmp_path: Path
) -> None:
    size = 300 * 1024 * 1024
    src = tmp_path / "debian.img"
    checksum = pattern_file(src, size, "md5")
    scope = ("--os-scope", "<glance: Berlin&Denver&Paris>")
    created = lab.openstack(
        "image", "create", f"debian-{os.getpid()}", "--file", str(src), "--disk-format", "raw",
        "--container-format", "bare", "-f", "json", *scope,
        timeout=1200,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    image_id = json.loads(created.stdout)["id"]
    try:
        for site in ("Berlin", "Denver", "Paris"):
            at_site = shown(lab, "image", image_id, site)  # the same ID at every site
            assert at_site is not None, f"no replica at {site}"
            assert at_site["status"] == "active"
            assert at_site["checksum"] == checksum
            assert at_site["size"] == size
    finally:
        gone = lab.openstack("image", "delete", image_id, *scope)
    assert gone.returncode == 0, gone.stderr
    for site in ("Berlin", "Denver", "Paris"):
        assert shown(lab, "image", image_id, site) is None, f"{site} kept {image_id}"


def test_a_user_is_created_at_two_independent_keystones_and_deleted_at_both(lab: Lab) -> None:
    """Denver's Keystone trusts only its own tokens: the gateway sends it a
    Denver token of Berlin's admin (Keystone-to-Keystone), and bob is made
    at both, each Keystone with an ID of its own; one delete removes both."""
    name = f"bob-{os.getpid()}"
    scope = ("--os-scope", "<keystone: Berlin&Denver>")
    try:
        out = lab.openstack("user", "create", name, "--password", "x", "-f", "json", *scope)
        assert out.returncode == 0, out.stderr
        ids = {site: shown(lab, "user", name, site) for site in ("Berlin", "Denver")}
        assert all(ids.values()), ids
        berlin, denver = (ids[s]["id"] for s in ("Berlin", "Denver"))  # type: ignore[index]
        assert berlin != denver
        assert read_handle(json.loads(out.stdout)["id"]) == {"Berlin": berlin, "Denver": denver}
    finally:
        gone = lab.openstack("user", "delete", name, *scope)
    assert gone.returncode == 0, gone.stderr
    for site in ("Berlin", "Denver"):
        assert shown(lab, "user", name, site) is None, f"{site} kept {name}"


def test_a_user_at_two_keystones_is_all_or_nothing(lab: Lab) -> None:
    """The name is taken at Denver: Denver refuses (409), the user made at
    Berlin is deleted again and the error says so; Denver keeps only its own."""
    name = f"carol-{os.getpid()}"
    taken = lab.openstack("user", "create", name, "--password", "x", cloud="Denver")
    assert taken.returncode == 0, taken.stderr
    try:
        out = lab.openstack(
            "user", "create", name, "--password", "x", "--os-scope", "<keystone: Berlin&Denver>"
        )  # fmt: skip
        assert out.returncode != 0
        assert "Denver: 409" in out.stderr, out.stderr
        assert "done at Berlin, then undone" in out.stderr, out.stderr
        assert shown(lab, "user", name, "Berlin") is None, f"Berlin kept {name}"
    finally:
        lab.openstack("user", "delete", name, cloud="Denver")
