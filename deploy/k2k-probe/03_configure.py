#!/usr/bin/env python3
"""Configure the full mesh through Keystone's REST API (one admin token per site).

Per site S:  project demo, group `federated` (member on demo), one local user (alice/bob/carol, member on demo);
and for every peer P != S (function federate):
  - S as SP:  identity provider P (remote_ids = [P's idp_entity_id]), mapping P_mapping, protocol saml2
  - S as IdP: service provider P (auth_url = P's .../identity_providers/S/protocols/saml2/auth,
              sp_url = P's mellon paosResponse); relay_state_prefix comes from keystone.conf [saml]
K2K_IDP_MODE=shared (variant, see REPORT.md): instead of N-1 IdPs/mappings/protocols, ONE identity provider
  `peers` whose remote_ids list all peers' entity ids, one mapping (user name "<name>@<idp entity id>" so that
  equal names from different peers stay apart), one protocol; SPs registered at the IdPs point to .../peers/...
CONFIGURE_ONLY="new ..." (07_add_site.sh): full setup on the newcomer(s), on the others only federate with them.
"""

import os
import sys
import time

import requests
from k2klib import LOCAL_USERS, SITES, admin_token, idp_entity, sp_auth_url, sp_ecp_url, url

t_start = time.perf_counter()
calls = 0


def api(site, tok, method, path, body=None, ok=(200, 201, 204)):
    global calls
    calls += 1
    r = requests.request(method, url(site) + path, json=body, headers={"X-Auth-Token": tok})
    if r.status_code not in ok:
        sys.exit(f"{site} {method} {path} -> {r.status_code} {r.text[:400]}")
    return r.json() if r.content else None


MODE = os.environ.get("K2K_IDP_MODE", "per-peer")


def shared_idp(s, tok, grp):
    """Variant: one Keystone IdP object for all peers (remote_ids = every peer's entity id)."""
    peers = [idp_entity(p) for p in SITES if p != s]
    api(
        s,
        tok,
        "PUT",
        "/OS-FEDERATION/identity_providers/peers",
        {
            "identity_provider": {
                "remote_ids": peers,
                "enabled": True,
                "description": "all peer Keystones",
            }
        },
    )
    # {1} = MELLON_IDP (a remote entry with any_one_of would not be substitutable); which entity ids are
    # accepted at all is enforced by Keystone via the IdP's remote_ids ([saml2] remote_id_attribute)
    rules = [
        {
            "local": [{"user": {"name": "{0}@{1}", "type": "ephemeral"}}, {"group": {"id": grp}}],
            "remote": [{"type": "MELLON_openstack_user"}, {"type": "MELLON_IDP"}],
        }
    ]
    api(s, tok, "PUT", "/OS-FEDERATION/mappings/peers_mapping", {"mapping": {"rules": rules}})
    api(
        s,
        tok,
        "PUT",
        "/OS-FEDERATION/identity_providers/peers/protocols/saml2",
        {"protocol": {"mapping_id": "peers_mapping"}},
    )


def federate(s, p, tok, grp):
    """Site s trusts peer p as IdP (p's users -> group grp, ephemeral) and registers p as its SP."""
    if (
        MODE == "shared"
    ):  # s as SP: nothing per peer (shared_idp); s as IdP: p's URL names IdP `peers`
        api(
            s,
            tok,
            "PUT",
            f"/OS-FEDERATION/service_providers/{p}",
            {
                "service_provider": {
                    "auth_url": sp_auth_url(p, "peers"),
                    "sp_url": sp_ecp_url(p),
                    "enabled": True,
                }
            },
        )
        return
    # --- s as Service Provider for IdP p
    api(
        s,
        tok,
        "PUT",
        f"/OS-FEDERATION/identity_providers/{p}",
        {
            "identity_provider": {
                "remote_ids": [idp_entity(p)],
                "enabled": True,
                "description": f"Keystone of site {p}",
            }
        },
    )
    rules = [
        {
            "local": [{"user": {"name": "{0}", "type": "ephemeral"}}, {"group": {"id": grp}}],
            "remote": [
                {"type": "MELLON_openstack_user"},
                {"type": "MELLON_IDP", "any_one_of": [idp_entity(p)]},
            ],
        }
    ]
    api(s, tok, "PUT", f"/OS-FEDERATION/mappings/{p}_mapping", {"mapping": {"rules": rules}})
    api(
        s,
        tok,
        "PUT",
        f"/OS-FEDERATION/identity_providers/{p}/protocols/saml2",
        {"protocol": {"mapping_id": f"{p}_mapping"}},
    )
    # --- s as Identity Provider: register p as a service provider
    api(
        s,
        tok,
        "PUT",
        f"/OS-FEDERATION/service_providers/{p}",
        {
            "service_provider": {
                "auth_url": sp_auth_url(p, s),
                "sp_url": sp_ecp_url(p),
                "enabled": True,
            }
        },
    )


ONLY = os.environ.get("CONFIGURE_ONLY", "").split()
for s in SITES:
    tok = admin_token(s)
    if ONLY and s not in ONLY:  # existing site: only federate with the newcomer(s)
        grp = api(s, tok, "GET", "/groups?name=federated")["groups"][0]["id"]
        for p in ONLY:
            federate(s, p, tok, grp)
        continue
    member = api(s, tok, "GET", "/roles?name=member")["roles"][0]["id"]
    demo = api(s, tok, "POST", "/projects", {"project": {"name": "demo", "domain_id": "default"}})[
        "project"
    ]["id"]
    grp = api(s, tok, "POST", "/groups", {"group": {"name": "federated", "domain_id": "default"}})[
        "group"
    ]["id"]
    api(s, tok, "PUT", f"/projects/{demo}/groups/{grp}/roles/{member}")
    uname, pw = LOCAL_USERS[s]
    uid = api(
        s, tok, "POST", "/users", {"user": {"name": uname, "password": pw, "domain_id": "default"}}
    )["user"]["id"]
    api(s, tok, "PUT", f"/projects/{demo}/users/{uid}/roles/{member}")
    if MODE == "shared":
        shared_idp(s, tok, grp)
    for p in SITES:
        if p != s:
            federate(s, p, tok, grp)
    print(f"{s:7s} demo project {demo}  local user {uname}")
print(f"configure: {calls} API calls, {time.perf_counter() - t_start:.1f} s")
