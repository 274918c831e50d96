#!/usr/bin/env python3
"""Populate one lab site through its APIs (run by `lab up` with the lab venv).

    lab_setup.py keystone  CLOUD SERVICE=URL...  service users, the `scoped`
                                                 user, services and endpoints
    lab_setup.py resources CLOUD                 image `tiny`, flavor
                                                 `m1.tiny`, network `net1`

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
    "glance": ("image", "glance", ("admin",)),
    "placement": ("placement", "placement", ("admin", "service")),
    "nova": ("compute", "nova", ("admin", "service")),
    "neutron": ("network", "neutron", ("admin", "service")),
}
# The future gateway's own account at each site (DESIGN.md section 8, `auth`).
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


def resources(conn):
    if conn.image.find_image("tiny") is None:
        with tempfile.NamedTemporaryFile(suffix=".img") as f:
            f.write(b"\0" * (1 << 20))  # 1 MiB raw: the fake virt driver never reads it
            f.flush()
            conn.create_image(
                "tiny",
                filename=f.name,
                disk_format="raw",
                container_format="bare",
                is_public=True,
                wait=True,
                timeout=120,
            )
    log(f"  image   tiny    {conn.image.find_image('tiny').status}")

    if conn.compute.find_flavor("m1.tiny") is None:
        conn.compute.create_flavor(name="m1.tiny", ram=64, vcpus=1, disk=1)
    log("  flavor  m1.tiny (1 vCPU, 64 MiB, 1 GB)")

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


def main(argv):
    if len(argv) < 2 or argv[0] not in ("keystone", "resources"):
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
    else:
        resources(conn)


if __name__ == "__main__":
    main(sys.argv[1:])
