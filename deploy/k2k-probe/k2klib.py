"""Shared helpers for the probe's Python scripts (mirror of common.sh)."""

import os

import requests

SITES = os.environ.get("SITES", "berlin denver paris").split()
# local (non-admin) users created by 03_configure.py: site -> (name, password)
LOCAL_USERS = {
    "berlin": ("alice", "alice-pw"),
    "denver": ("bob", "bob-pw"),
    "paris": ("carol", "carol-pw"),
}
for _s in SITES:
    LOCAL_USERS.setdefault(_s, (f"user-{_s}", f"user-{_s}-pw"))


def port(site):
    return 26000 + 100 * (SITES.index(site) + 1)


def url(site):
    return f"http://127.0.0.1:{port(site)}/v3"


def idp_entity(site):
    return f"{url(site)}/OS-FEDERATION/saml2/idp"


def sp_auth_url(sp, idp):
    """URL at SP `sp` where IdP `idp`'s users obtain an unscoped federated token (behind mellon)."""
    return f"{url(sp)}/OS-FEDERATION/identity_providers/{idp}/protocols/saml2/auth"


def sp_ecp_url(sp):
    """mellon's PAOS assertion consumer at SP `sp` (Keystone's 'sp_url')."""
    return f"{url(sp)}/mellon/paosResponse"


def password_token(site, user, password, project="demo"):
    r = requests.post(
        url(site) + "/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        },
    )
    r.raise_for_status()
    return r.headers["X-Subject-Token"], r.json()["token"]


def admin_token(site):
    return password_token(site, "admin", f"admin-{site}", project="admin")[0]
