"""End to end on independent sites: every Keystone has its own IDs and trusts
only its own tokens, and a normal user (alice, member of Berlin's ``demo``,
not admin) works at Denver through Berlin's gateway with a token of
Denver's own Keystone, had by Keystone-to-Keystone federation
(docs/design.md §4).
"""

from __future__ import annotations

import json
import os

import httpx
import pytest

from .conftest import Lab

pytestmark = pytest.mark.e2e

ALICE = "Berlin-alice"


def project_id(lab: Lab, site: str, name: str) -> str:
    """The ID of project ``name`` at ``site``, asked of that site's own Keystone."""
    out = lab.openstack("project", "show", name, "-f", "value", "-c", "id", cloud=site)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_no_two_sites_share_a_project_id(lab: Lab) -> None:
    for name in ("admin", "demo"):
        ids = {site: project_id(lab, site, name) for site in ("Berlin", "Denver", "Paris")}
        assert len(set(ids.values())) == 3, (name, ids)


def test_a_plain_token_of_one_site_means_nothing_at_another(lab: Lab) -> None:
    """What the gateway's exchange is for: Denver's Keystone refuses a Berlin
    token sent straight to it."""
    token = lab.openstack("token", "issue", "-f", "value", "-c", "id", cloud=ALICE)
    assert token.returncode == 0, token.stderr
    denver_keystone = "http://127.0.0.1:15100/v3"
    resp = httpx.get(
        f"{denver_keystone}/auth/tokens",
        headers={"X-Auth-Token": token.stdout.strip(), "X-Subject-Token": token.stdout.strip()},
        timeout=60,
    )
    assert resp.status_code == 401, resp.text


def test_alice_boots_at_both_sites_each_vm_in_that_sites_own_demo(lab: Lab) -> None:
    """Alice boots at Berlin from Denver's image (Nova at Berlin fetches it
    from Denver's Glance with a Denver token), and at Denver through Berlin's
    gateway; one list under ``&`` shows both, each owned by its site's demo."""
    suffix = os.getpid()
    boots = {
        "Berlin": (f"alice-berlin-{suffix}", "<nova: Berlin, glance: Denver>"),
        "Denver": (f"alice-denver-{suffix}", "<nova: Denver, glance: Denver, neutron: Denver>"),
    }
    try:
        for site, (name, scope) in boots.items():
            out = lab.openstack(
                "server", "create", name, "--flavor", "m1.tiny", "--image", "cirros-denver",
                "--network", "net1", "--wait", "-f", "json", "--os-scope", scope,
                cloud=ALICE, timeout=600,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["status"] == "ACTIVE", (site, out.stdout)
        listed = lab.openstack(
            "server", "list", "-f", "json", "--os-scope", "<nova: Berlin&Denver>", cloud=ALICE
        )
        assert listed.returncode == 0, listed.stderr
        names = {row["Name"] for row in json.loads(listed.stdout)}
        assert {name for name, _ in boots.values()} <= names
        assert not names & {"vm-berlin", "vm-denver"}, "admin's servers are not alice's"
        owners = {}
        for site, (name, _) in boots.items():
            shown = lab.openstack(
                "server", "show", name, "-f", "json", "--os-scope", f"<nova: {site}>", cloud=ALICE
            )
            assert shown.returncode == 0, shown.stderr
            owners[site] = json.loads(shown.stdout)["project_id"]
        assert owners == {site: project_id(lab, site, "demo") for site in boots}
        assert owners["Berlin"] != owners["Denver"]
    finally:
        for site, (name, _) in boots.items():
            lab.openstack(
                "server", "delete", "--wait", name, "--os-scope", f"<nova: {site}>",
                cloud=ALICE, timeout=600,
            )  # fmt: skip
    for site, (name, _) in boots.items():
        gone = lab.openstack("server", "list", "-f", "value", "-c", "Name", "--all-projects",
                             cloud=site)  # fmt: skip
        assert gone.returncode == 0, gone.stderr
        assert name not in gone.stdout.split(), f"{site} kept {name}"


def test_alice_is_refused_what_only_admins_may_do_at_another_site(lab: Lab) -> None:
    """Her Denver token carries the roles Denver gives her (member of its
    demo), never more: listing every project's servers there is refused by
    Denver's own policy."""
    out = lab.openstack(
        "server", "list", "--all-projects", "--os-scope", "<nova: Denver>", cloud=ALICE
    )
    assert out.returncode != 0
    assert "403" in out.stderr, out.stderr
