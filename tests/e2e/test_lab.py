"""End to end: the real ``openstack`` CLI against real OpenStack sites with
scoped in front (a gateway at Berlin and Denver, the WSGI filter at Paris).

Run with the rest of the suite; the lab comes up once (tests/e2e/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import Lab, pattern_file

pytestmark = pytest.mark.e2e


def rows(out: str) -> list[dict[str, object]]:
    data = json.loads(out)
    assert isinstance(data, list)
    return data


def test_fan_out_lists_servers_and_images_of_several_sites(lab: Lab) -> None:
    servers = lab.openstack("server", "list", "-f", "json", "--os-scope", "<nova: Berlin&Denver>")
    assert servers.returncode == 0, servers.stderr
    names = {r["Name"] for r in rows(servers.stdout)}
    assert {"vm-berlin", "vm-denver"} <= names
    assert "vm-paris" not in names
    images = lab.openstack(
        "image", "list", "-f", "json", "--os-scope", "<glance: Berlin&Denver&Paris>"
    )
    assert images.returncode == 0, images.stderr
    names = {r["Name"] for r in rows(images.stdout)}
    assert {"cirros-berlin", "cirros-denver", "cirros-paris"} <= names


def test_paging_through_a_fan_out_returns_every_image_once(lab: Lab) -> None:
    scope = "<glance: Berlin&Denver&Paris>"
    whole = rows(lab.openstack("image", "list", "-f", "json", "--os-scope", scope).stdout)
    # OSC stops paging when --limit is given; openstacksdk follows glance's
    # next links (the gateway's composite markers) one image at a time.
    code = (
        f"import json, scoped_osc; c = scoped_osc.connect(cloud='Berlin', scope={scope!r}); "
        "print(json.dumps([i.id for i in c.image.images(limit=1)]))"
    )
    paged = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, env=lab.env, timeout=300, check=False,
    )  # fmt: skip
    assert paged.returncode == 0, paged.stderr
    ids = json.loads(paged.stdout)
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(r["ID"] for r in whole)
    assert len(ids) >= 3


def test_a_bad_scope_exits_2_with_a_caret_and_sends_nothing(lab: Lab) -> None:
    out = lab.openstack("server", "list", "--os-scope", "<nova: Berlin&&Denver>")
    assert out.returncode == 2
    assert "expected a site name" in out.stderr
    assert "^" in out.stderr
    assert "Traceback" not in out.stderr


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_boot_in_berlin_from_an_image_only_denver_has(lab: Lab) -> None:
    berlin_gw, denver_gw = lab.gateway("Berlin"), lab.gateway("Denver")
    assert berlin_gw is not None and denver_gw is not None
    before = {gw: httpx.get(f"{gw}/metrics", timeout=10).text for gw in (berlin_gw, denver_gw)}
    name = f"vm-cross-{os.getpid()}"
    out = lab.openstack(
        "server", "create", name, "--flavor", "m1.tiny", "--image", "cirros-denver",
        "--network", "net1", "--wait", "-f", "json",
        "--os-scope", "<nova: Berlin, glance: Denver>",
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    server = json.loads(out.stdout)
    assert server["status"] == "ACTIVE"
    after = {gw: httpx.get(f"{gw}/metrics", timeout=10).text for gw in (berlin_gw, denver_gw)}
    # Nova at Berlin called Denver's Glance through Berlin's gateway, which
    # sent a Denver token for the user, had by Keystone-to-Keystone ...
    exchanges = {"site": "Denver", "outcome": "ok"}
    assert metric(after[berlin_gw], "scoped_token_exchanges_total", **exchanges) > metric(
        before[berlin_gw], "scoped_token_exchanges_total", **exchanges
    )
    # ... which Denver validated at home: never at Berlin's Keystone.
    key = {"service": "identity", "site": "Berlin", "outcome": "200"}
    assert metric(after[denver_gw], "scoped_upstream_requests_total", **key) == metric(
        before[denver_gw], "scoped_upstream_requests_total", **key
    )
    lab.openstack("server", "delete", name, "--wait", "--os-scope", "<nova: Berlin>")


def test_an_outage_drill(lab: Lab) -> None:
    down = lab.scoped("down", "--sites", "Denver", timeout=300)
    assert down.returncode == 0, down.stderr
    try:
        failover = lab.openstack(
            "server", "list", "-f", "json", "--os-scope", "<nova: Denver|Berlin>"
        )
        assert failover.returncode == 0, failover.stderr
        assert "vm-berlin" in {r["Name"] for r in rows(failover.stdout)}
        strict = lab.openstack("server", "list", "--os-scope", "<nova: Berlin&Denver>")
        assert strict.returncode != 0
        assert "Denver" in strict.stderr
        lenient = lab.openstack(
            "server", "list", "-f", "json", "--os-scope", "<nova: Berlin&Denver?>"
        )
        assert lenient.returncode == 0, lenient.stderr
        assert "vm-berlin" in {r["Name"] for r in rows(lenient.stdout)}
    finally:
        up = lab.scoped("up", "--sites", "Denver", timeout=900)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    deadline = time.monotonic() + 120
    while True:
        back = lab.openstack("server", "list", "-f", "json", "--os-scope", "<nova: Denver|Berlin>")
        if back.returncode == 0 and "vm-denver" in {r["Name"] for r in rows(back.stdout)}:
            break
        assert time.monotonic() < deadline, back.stderr
        time.sleep(2)


def test_a_100_mib_image_goes_to_denver_through_berlin_and_back(lab: Lab, tmp_path: Path) -> None:
    size = 100 * 1024 * 1024
    src = tmp_path / "big.img"
    digest = pattern_file(src, size, "sha256")
    scope = ("--os-scope", "<glance: Denver>")
    name = f"big-{os.getpid()}"
    created = lab.openstack(
        "image", "create", name, "--file", str(src), "--disk-format", "raw",
        "--container-format", "bare", "-f", "json", *scope,
        timeout=900,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    image_id = json.loads(created.stdout)["id"]
    try:
        at_denver = lab.openstack("image", "show", image_id, "-f", "json", cloud="Denver")
        assert at_denver.returncode == 0  # it lives at Denver, not at Berlin
        assert lab.openstack("image", "show", image_id, "--os-scope", "<glance: Berlin>").returncode
        back = tmp_path / "back.img"
        saved = lab.openstack("image", "save", image_id, "--file", str(back), *scope, timeout=900)
        assert saved.returncode == 0, saved.stderr
        got = hashlib.sha256(back.read_bytes()).hexdigest()
        assert got == digest
    finally:
        lab.openstack("image", "delete", image_id, *scope)


def test_the_scope_is_in_every_answer(lab: Lab) -> None:
    out = lab.openstack("--debug", "server", "list", "--os-scope", "<nova: Berlin&Denver>")
    assert out.returncode == 0
    assert re.search(r"x-scope-sites: Berlin=200;t=[\d.]+, Denver=200;t=", out.stderr, re.I)


def test_x_scope_alone_fans_out_with_a_plain_token(lab: Lab) -> None:
    """A client with no plugin (curl): a plain Berlin token and nothing but
    X-Scope. Denver gets a token of its own for it, carrying the complete
    scope (with identity at Denver), so that its services' own calls follow."""
    token = lab.openstack("token", "issue", "-f", "value", "-c", "id")
    assert token.returncode == 0, token.stderr
    gateway = lab.gateway("Berlin")
    assert gateway is not None
    resp = httpx.get(
        f"{gateway}/compute/v2.1/servers",
        headers={"X-Auth-Token": token.stdout.strip(), "X-Scope": "<nova: Berlin&Denver>"},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    names = {s["name"] for s in resp.json()["servers"]}
    assert {"vm-berlin", "vm-denver"} <= names
    assert resp.headers["x-scope"] == "<compute: Berlin&Denver, *: Berlin>"
    # Nova's self and bookmark links, each written by its own site to the
    # address the gateway called, all point back here.
    hrefs = [link["href"] for s in resp.json()["servers"] for link in s["links"]]
    assert len(hrefs) >= 2 * len(names)
    assert all(href.startswith(f"{gateway}/compute/") for href in hrefs), hrefs


SDK_NO_PLUGIN = """
import json, sys
import openstack
from scoped.urlscope import scope_url

gateway, scope, image = sys.argv[1], sys.argv[2], sys.argv[3]
conn = openstack.connect(
    auth_url=scope_url(gateway, scope), username="admin", password="secret",
    project_name="admin", user_domain_name="Default", project_domain_name="Default",
    region_name="Berlin", identity_api_version="3",
)
out = {"names": sorted(s.name for s in conn.compute.servers())}
if image:
    img = conn.image.find_image(image)
    flavor = conn.compute.find_flavor("m1.tiny")
    net = conn.network.find_network("net1")
    vm = conn.compute.create_server(
        name="sdk-url-vm", image_id=img.id, flavor_id=flavor.id, networks=[{"uuid": net.id}]
    )
    vm = conn.compute.wait_for_server(vm, wait=240)
    out["status"] = vm.status
    conn.compute.delete_server(vm)
    conn.compute.wait_for_delete(vm, wait=240)
print(json.dumps(out))
"""


def test_openstacksdk_with_no_plugin_through_a_scoped_auth_url(lab: Lab) -> None:
    """Plain openstacksdk (no vendor hook, no OSC plugin), given only the
    scoped auth URL: its catalog keeps the scope, so it lists the servers of
    both sites, and with <nova: Denver, neutron: Denver> it boots at Denver
    (on Denver's net1) from Berlin's image."""
    gateway = lab.gateway("Berlin")
    assert gateway is not None

    def sdk(scope: str, image: str = "") -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-c", SDK_NO_PLUGIN, gateway, scope, image],
            capture_output=True, text=True, env=lab.env, timeout=600, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert isinstance(result, dict)
        return result

    both = sdk("<nova: Berlin&Denver>")
    assert {"vm-berlin", "vm-denver"} <= set(both["names"])  # type: ignore[arg-type]
    assert "vm-paris" not in both["names"]  # type: ignore[operator]
    denver = sdk("<nova: Denver, neutron: Denver>", image="cirros-berlin")
    assert "vm-denver" in denver["names"] and "vm-berlin" not in denver["names"]  # type: ignore[operator]
    assert denver["status"] == "ACTIVE"


def test_scope_explain_knows_the_sites_from_the_gateway(lab: Lab) -> None:
    typo = lab.openstack("scope", "explain", "<nova: Berlin&Denvr>")
    assert typo.returncode == 2
    assert "unknown site 'Denvr'; did you mean 'Denver'?" in typo.stderr
    every = lab.openstack("scope", "explain", "--json", "<nova: *>")
    assert every.returncode == 0, every.stderr
    sites = [c["site"] for c in json.loads(every.stdout)["plan"]["compute"]["all"]]
    assert sites == ["Berlin", "Denver", "Paris"]
