#!/usr/bin/env python3
"""Populate one lab site through its APIs (run by `lab up` with the lab venv).

    lab_setup.py keystone  CLOUD SERVICE=URL...  service users, the `scoped`
                                                 user, services and endpoints
                                                 (keystone=URL: the identity
                                                 endpoints made by bootstrap)
    lab_setup.py resources CLOUD                 images `tiny` and
                                                 `cirros-<site>`, flavor
                                                 `m1.tiny`, network `net1`
    lab_setup.py server    CLOUD NAME IMAGE      server NAME, ACTIVE, booted
                                                 from IMAGE on net1
    lab_setup.py federation CLOUD USER PEER=ENTITY=URL...
                                                 project `demo`, groups for
                                                 federated users, the local
                                                 user USER (or -), and the
                                                 Keystone-to-Keystone trust
                                                 with every PEER (its identity
                                                 provider's entity ID, its
                                                 Keystone's URL from here)

CLOUD names a cloud of the clouds.yaml given by OS_CLIENT_CONFIG_FILE (the
site's admin). Every step is idempotent: running it again changes nothing.
One Python process with openstacksdk is ~10x faster than the same steps done
with one `openstack` CLI call each.
"""

import os
import sys
import tempfile

import openstack

PASSWORD = "secret"
# service name -> (service type, project's service user, roles in `service`)
SERVICES = {
    "keystone": ("identity", None, ()),  # the service and user made by bootstrap
    "glance": ("image", "glance", ("admin",)),
    "placement": ("placement", "placement", ("admin", "service")),
    "nova": ("compute", "nova", ("admin", "service")),
    "neutron": ("network", "neutron", ("admin", "service")),
}
# The future gateway's own account at each site (docs/design.md §8, `auth`).
GATEWAY_USER = ("scoped", ("admin",))


def log(msg):
    print(msg, flush=True)


def ensure_user(idn, domain, project, name, roles):
    user = idn.find_user(name, domain_id=domain.id)
    if user is None:
        user = idn.create_user(name=name, password=PASSWORD, domain_id=domain.id)
    for role_name in roles:
        role = idn.find_role(role_name) or idn.create_role(name=role_name)
        idn.assign_project_role_to_user(project, user, role)
    return user


def keystone(conn, region, urls):
    idn = conn.identity
    domain = idn.find_domain("default")
    project = idn.find_project("service", domain_id=domain.id)
    if project is None:
        project = idn.create_project(
            name="service", domain_id=domain.id, description="Service users"
        )
    for name, url in urls.items():
        stype, user, roles = SERVICES[name]
        if user is not None:
            ensure_user(idn, domain, project, user, roles)
        service = idn.find_service(name) or idn.create_service(name=name, type=stype)
        existing = {
            ep.interface: ep for ep in idn.endpoints(service_id=service.id, region_id=region)
        }
        for interface in ("public", "internal", "admin"):
            ep = existing.get(interface)
            if ep is None:
                idn.create_endpoint(
                    service_id=service.id,
                    interface=interface,
                    url=url,
                    region_id=region,
                )
            elif ep.url != url:
                idn.update_endpoint(ep, url=url)
        log(f"  {stype:9} {name:9} {url}")
    ensure_user(idn, domain, project, *GATEWAY_USER)
    log(
        f"  user {GATEWAY_USER[0]!r} (password {PASSWORD!r}): "
        f"roles {', '.join(GATEWAY_USER[1])} on project 'service'"
    )


def ensure_image(conn, name, fill):
    if conn.image.find_image(name) is None:
        with tempfile.NamedTemporaryFile(suffix=".img") as f:
            f.write(fill * (1 << 20))  # 1 MiB raw: the fake virt driver never reads it
            f.flush()
            conn.create_image(
                name,
                filename=f.name,
                disk_format="raw",
                container_format="bare",
                is_public=True,
                wait=True,
                timeout=120,
            )
    log(f"  image   {name:14} {conn.image.find_image(name).status} (public)")


FLAVOR_ID = "m1.tiny"


def resources(conn, site):
    ensure_image(conn, "tiny", b"\0")
    # An image only this site has: boot elsewhere with <glance: ThisSite>.
    ensure_image(conn, f"cirros-{site.lower()}", site.encode()[:1])

    # The same flavor id at every site, as an operator of a federation keeps
    # them (Nova lets the creator choose it): a fan-out boot names one flavor
    # that every site resolves (`<nova: Berlin&Denver>`, docs/design.md §11).
    flavor = conn.compute.find_flavor("m1.tiny")
    if flavor is not None and flavor.id != FLAVOR_ID:
        conn.compute.delete_flavor(flavor)  # an older lab's: a random id
        flavor = None
    if flavor is None:
        conn.compute.create_flavor(id=FLAVOR_ID, name="m1.tiny", ram=64, vcpus=1, disk=1)
    log(f"  flavor  m1.tiny (id {FLAVOR_ID}: 1 vCPU, 64 MiB, 1 GB)")

    net = conn.network.find_network("net1")
    if net is None:
        net = conn.network.create_network(name="net1", is_shared=True)
    if conn.network.find_subnet("net1-subnet") is None:
        conn.network.create_subnet(
            name="net1-subnet",
            network_id=net.id,
            ip_version=4,
            cidr="10.0.0.0/24",
        )
    log("  network net1 (shared) with subnet net1-subnet 10.0.0.0/24")


def server(conn, name, image_name):
    """Server ``name`` ACTIVE; one in another state (ERROR, SHUTOFF) is made anew."""
    found = conn.compute.find_server(name)
    if found is not None:
        found = conn.compute.get_server(found.id)
        if found.status == "ACTIVE":
            log(f"  server  {name:14} ACTIVE ({found.id})")
            return
        log(f"  server  {name:14} was {found.status}: deleting it")
        conn.compute.delete_server(found)
        conn.compute.wait_for_delete(found, wait=120)
    image = conn.image.find_image(image_name, ignore_missing=False)
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    net = conn.network.find_network("net1", ignore_missing=False)
    created = conn.compute.create_server(
        name=name, image_id=image.id, flavor_id=flavor.id, networks=[{"uuid": net.id}]
    )
    created = conn.compute.wait_for_server(created, status="ACTIVE", wait=180)
    log(f"  server  {name:14} ACTIVE ({created.id})")


# Federated users get their roles at a site from its groups: every peer's
# user is member of `demo`; a peer's admin is admin of `admin` (the lab trusts
# its peers' admins; a real federation decides that per peer).
FEDERATED_GROUPS = {"federated": ("demo", "member"), "federated-admins": ("admin", "admin")}


def federation(conn, user, peers):
    """This site trusts each peer's Keystone as an identity provider (its
    users become ephemeral users here, in the groups above) and registers
    each peer as a service provider (its users can go there)."""
    idn = conn.identity
    domain = idn.find_domain("default")
    demo = idn.find_project("demo", domain_id=domain.id) or idn.create_project(
        name="demo", domain_id=domain.id, description="Every site's own demo project"
    )
    groups = {}
    for name, (project_name, role_name) in FEDERATED_GROUPS.items():
        group = idn.find_group(name, domain_id=domain.id) or idn.create_group(
            name=name, domain_id=domain.id, description="Users of peer sites (K2K)"
        )
        project = idn.find_project(project_name, domain_id=domain.id, ignore_missing=False)
        idn.assign_project_role_to_group(project, group, idn.find_role(role_name))
        groups[name] = group.id
    if user != "-":
        ensure_user(idn, domain, demo, user, ("member",))
        log(f"  user    {user} (password {PASSWORD!r}): member of demo {demo.id}")
    site = conn.config.region_name
    for peer in peers:
        name, entity, url = peer.split("=", 2)
        user_name = [
            {"type": "MELLON_openstack_user"},
            {"type": "MELLON_IDP", "any_one_of": [entity]},
        ]
        rules = [
            {
                "local": [{"user": {"name": "{0}", "type": "ephemeral"}}, {"group": {"id": gid}}],
                "remote": user_name
                + ([{"type": "MELLON_openstack_roles", "any_one_of": ["admin"]}] if admins else []),
            }
            for gid, admins in ((groups["federated"], False), (groups["federated-admins"], True))
        ]
        base = "/OS-FEDERATION"
        put(
            idn,
            f"{base}/identity_providers/{name}",
            "identity_provider",
            {"remote_ids": [entity], "enabled": True, "description": f"Keystone of site {name}"},
        )
        put(idn, f"{base}/mappings/{name}", "mapping", {"rules": rules})
        put(
            idn,
            f"{base}/identity_providers/{name}/protocols/saml2",
            "protocol",
            {"mapping_id": name},
        )
        put(idn, f"{base}/service_providers/{name}", "service_provider", {
            "auth_url": f"{url}/v3/OS-FEDERATION/identity_providers/{site}/protocols/saml2/auth",
            "sp_url": f"{url}/v3/mellon/paosResponse",
            "relay_state_prefix": "/v3/k2k-relay-",
            "enabled": True,
        })  # fmt: skip
        log(f"  peer    {name}: identity provider {entity}; service provider at {url}")


def put(idn, path, kind, body):
    """Create the object at ``path``, or update it to ``body``."""
    found = idn.get(path, raise_exc=False)
    if found.status_code == 404:
        idn.put(path, json={kind: body}).raise_for_status()
    else:
        found.raise_for_status()
        have = found.json()[kind]
        if any(have.get(k) != v for k, v in body.items()):
            idn.patch(path, json={kind: body}).raise_for_status()


def main(argv):
    if len(argv) < 2 or argv[0] not in ("keystone", "resources", "server", "federation"):
        sys.exit(__doc__)
    if argv[0] == "server" and len(argv) != 4:
        sys.exit(__doc__)
    if "OS_CLIENT_CONFIG_FILE" not in os.environ:
        sys.exit("OS_CLIENT_CONFIG_FILE is not set")
    command, cloud = argv[0], argv[1]
    conn = openstack.connect(cloud=cloud)
    if command == "keystone":
        urls = dict(arg.split("=", 1) for arg in argv[2:])
        unknown = set(urls) - set(SERVICES)
        if unknown:
            sys.exit(f"unknown service(s): {', '.join(sorted(unknown))}")
        keystone(conn, conn.config.region_name, urls)
    elif command == "server":
        server(conn, argv[2], argv[3])
    elif command == "federation":
        federation(conn, argv[2], argv[3:])
    else:
        resources(conn, cloud)


if __name__ == "__main__":
    main(sys.argv[1:])
