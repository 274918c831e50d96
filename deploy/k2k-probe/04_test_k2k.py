#!/usr/bin/env python3
"""Full-mesh K2K test with keystoneauth1's Keystone2Keystone plugin.

For every ordered pair (home site S, target site T != S): a local user of S (alice@berlin, bob@denver,
carol@paris) and additionally Denver's admin -> Berlin, exchange the S token for a T token scoped to
T's `demo` project; validate it at T (GET /v3/auth/tokens with T's admin token) and check it names
T's demo project id (which differs from S's). Time 10 exchanges per pair (median). Then negative checks.
Writes results/test.json.
"""

import json
import os
import re
import statistics
import sys
import time

import requests
from k2klib import LOCAL_USERS, SITES, admin_token, password_token, sp_auth_url, sp_ecp_url, url
from keystoneauth1 import session
from keystoneauth1.identity import v3

N = int(os.environ.get("K2K_REPEAT", "10"))
os.makedirs("results", exist_ok=True)
admin = {s: admin_token(s) for s in SITES}
demo_id = {
    s: requests.get(url(s) + "/projects?name=demo", headers={"X-Auth-Token": admin[s]}).json()[
        "projects"
    ][0]["id"]
    for s in SITES
}
failures = []


def check(cond, msg):
    print(("  ok   " if cond else "  FAIL ") + msg)
    if not cond:
        failures.append(msg)


def home_plugin(site, user, password, project="demo"):
    return v3.Password(
        auth_url=url(site),
        username=user,
        password=password,
        user_domain_id="default",
        project_name=project,
        project_domain_id="default",
    )


def exchange(base, target):
    """THE call: token of the home Keystone (base plugin) -> token of `target`, scoped to target's demo."""
    k2k = v3.Keystone2Keystone(
        base,
        target,  # service provider id registered at home
        project_name="demo",
        project_domain_id="default",
    )  # project at the SP
    sess = session.Session()  # fresh cookie jar per exchange
    t0 = time.perf_counter()
    acc = k2k.get_access(sess)
    return acc, time.perf_counter() - t0


cases = [(s, *LOCAL_USERS[s], "demo", t) for s in SITES for t in SITES if t != s]
MODE = os.environ.get("K2K_IDP_MODE", "per-peer")
if {"denver", "berlin", "paris"} <= set(SITES):
    cases.append(("denver", "admin", "admin-denver", "admin", "berlin"))
    cases.append(
        ("paris", "admin", "admin-paris", "admin", "berlin")
    )  # same user name, other home: must differ
results = []
for home, user, pw, proj, target in cases:
    print(f"{user}@{home} (project {proj}) -> {target}")
    base = home_plugin(home, user, pw, proj)
    home_acc = base.get_access(session.Session(auth=base))
    acc, cold = exchange(base, target)
    # validate at the target with the target's admin token
    r = requests.get(
        url(target) + "/auth/tokens",
        headers={"X-Auth-Token": admin[target], "X-Subject-Token": acc.auth_token},
    )
    tok = r.json().get("token", {}) if r.ok else {}
    check(
        r.status_code == 200,
        f"{target} validates the token (GET /v3/auth/tokens -> {r.status_code})",
    )
    check(
        tok.get("project", {}).get("id") == demo_id[target],
        f"token names {target} demo project {tok.get('project', {}).get('id')} (home project {home_acc.project_id})",
    )
    check(demo_id[target] != home_acc.project_id, "target project id differs from home project id")
    roles = sorted(x["name"] for x in tok.get("roles", []))
    check("admin" not in roles, f"roles at {target}: {roles} (from {target}'s mapping only)")
    fed = tok.get("user", {}).get("OS-FEDERATION", {})
    check(
        fed.get("identity_provider", {}).get("id") == (home if MODE != "shared" else "peers"),
        f"user federated via IdP {fed.get('identity_provider', {}).get('id')}, "
        f"user name {tok.get('user', {}).get('name')}, domain {tok.get('user', {}).get('domain', {}).get('name')}",
    )
    # the home Keystone does not know the target's token
    r2 = requests.get(
        url(home) + "/auth/tokens",
        headers={"X-Auth-Token": admin[home], "X-Subject-Token": acc.auth_token},
    )
    check(r2.status_code == 404, f"{home} does not accept the {target} token ({r2.status_code})")
    times = [exchange(base, target)[1] for _ in range(N)]
    med = statistics.median(times)
    print(
        f"  time: cold {cold * 1000:.0f} ms; {N} warm: median {med * 1000:.0f} ms, min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}"
    )
    results.append(
        {
            "home": home,
            "user": user,
            "target": target,
            "home_project": home_acc.project_id,
            "target_project": tok.get("project", {}).get("id"),
            "roles": roles,
            "target_user_id": tok.get("user", {}).get("id"),
            "cold_ms": round(cold * 1000),
            "median_ms": round(med * 1000),
            "min_ms": round(min(times) * 1000),
            "max_ms": round(max(times) * 1000),
        }
    )

if "berlin" not in SITES or "denver" not in SITES or "paris" not in SITES:
    json.dump({"cases": results, "failures": failures}, open("results/test.json", "w"), indent=1)
    print("ALL CHECKS PASSED" if not failures else f"{len(failures)} FAILURES")
    sys.exit(1 if failures else 0)
adm = [c["target_user_id"] for c in results if c["user"] == "admin"]
if len(adm) == 2:
    check(
        adm[0] != adm[1],
        f"admin@denver and admin@paris are different users at berlin ({adm[0][:12]}.. vs {adm[1][:12]}..)",
    )
# ---- the gateway's case: it holds only the user's home token (no password): base plugin = v3.Token
tokA, _ = password_token("berlin", "alice", "alice-pw")
tbase = v3.Token(
    auth_url=url("berlin"), token=tokA, project_name="demo", project_domain_id="default"
)
acc = v3.Keystone2Keystone(
    tbase, "denver", project_name="demo", project_domain_id="default"
).get_access(session.Session())
r = requests.get(
    url("denver") + "/auth/tokens",
    headers={"X-Auth-Token": admin["denver"], "X-Subject-Token": acc.auth_token},
)
check(
    r.ok and r.json()["token"]["project"]["id"] == demo_id["denver"],
    f"v3.Token(alice's berlin token) -> denver token scoped to denver demo ({r.status_code})",
)
# ---- step breakdown (raw HTTP, what the plugin does) for alice berlin -> denver, median of N
tokA, _ = password_token("berlin", "alice", "alice-pw")
steps = {
    k: []
    for k in (
        "1_ecp_assertion_at_idp",
        "2_mellon_paosResponse",
        "3_unscoped_federated_token",
        "4_rescope_to_project",
    )
}
for _ in range(N):
    s = requests.Session()
    t = time.perf_counter()
    ecp = s.post(
        url("berlin") + "/auth/OS-FEDERATION/saml2/ecp",
        json={
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": tokA}},
                "scope": {"service_provider": {"id": "denver"}},
            }
        },
    )
    steps["1_ecp_assertion_at_idp"].append(time.perf_counter() - t)
    t = time.perf_counter()
    r = s.post(
        sp_ecp_url("denver"),
        data=ecp.text,
        headers={"Content-Type": "application/vnd.paos+xml"},
        allow_redirects=False,
    )
    steps["2_mellon_paosResponse"].append(time.perf_counter() - t)
    t = time.perf_counter()
    r = s.get(sp_auth_url("denver", "berlin" if MODE != "shared" else "peers"))
    unscoped = r.headers["X-Subject-Token"]
    steps["3_unscoped_federated_token"].append(time.perf_counter() - t)
    t = time.perf_counter()
    r = s.post(
        url("denver") + "/auth/tokens",
        json={
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": unscoped}},
                "scope": {"project": {"name": "demo", "domain": {"id": "default"}}},
            }
        },
    )
    r.raise_for_status()
    steps["4_rescope_to_project"].append(time.perf_counter() - t)
breakdown = {k: round(statistics.median(v) * 1000) for k, v in steps.items()}
print("step medians (ms), alice berlin -> denver:", breakdown)

# ---- negative checks specific to a mesh
print("negative checks")


def ecp_for(idp, sp, tok):
    return requests.post(
        url(idp) + "/auth/OS-FEDERATION/saml2/ecp",
        json={
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": tok}},
                "scope": {"service_provider": {"id": sp}},
            }
        },
    ).text


# (a) a valid Berlin assertion for Paris, then Paris's auth URL of IdP *denver*: Keystone must refuse
#     (in shared mode there is one IdP path only; instead: an IdP id that does not exist)
s = requests.Session()
r1 = s.post(
    sp_ecp_url("paris"),
    data=ecp_for("berlin", "paris", tokA),
    headers={"Content-Type": "application/vnd.paos+xml"},
    allow_redirects=False,
)
r2 = s.get(
    sp_auth_url("paris", "denver" if MODE != "shared" else "nosuchidp"), allow_redirects=False
)
check(
    r1.status_code in (302, 303) and r2.status_code >= 400 and "X-Subject-Token" not in r2.headers,
    f"berlin assertion used on paris's path for IdP denver: paos {r1.status_code}, auth {r2.status_code} {r2.text[:120]!r}",
)
# (b) an assertion Berlin issued for Denver (Destination/Recipient = Denver) presented at Paris
#     (i.e. a malicious Denver replaying its users' assertions elsewhere)
s = requests.Session()
r1 = s.post(
    sp_ecp_url("paris"),
    data=ecp_for("berlin", "denver", tokA),
    headers={"Content-Type": "application/vnd.paos+xml"},
    allow_redirects=False,
)
r2 = s.get(sp_auth_url("paris", "berlin" if MODE != "shared" else "peers"), allow_redirects=False)
check(
    r2.status_code != 201 and "X-Subject-Token" not in r2.headers,
    f"assertion for denver presented at paris: paos {r1.status_code}, auth {r2.status_code}",
)
neg_b = {"paos": r1.status_code, "auth": r2.status_code}
# (b2) same, with the (unsigned) Response Destination rewritten to Paris: the signed Recipient still says Denver
forged = re.sub(
    r'Destination="[^"]*"',
    f'Destination="{sp_ecp_url("paris")}"',
    ecp_for("berlin", "denver", tokA),
)
s = requests.Session()
r1 = s.post(
    sp_ecp_url("paris"),
    data=forged,
    headers={"Content-Type": "application/vnd.paos+xml"},
    allow_redirects=False,
)
r2 = s.get(sp_auth_url("paris", "berlin" if MODE != "shared" else "peers"), allow_redirects=False)
check(
    r1.status_code not in (302, 303) and "X-Subject-Token" not in r2.headers,
    f"assertion for denver with Destination rewritten to paris: paos {r1.status_code}, auth {r2.status_code}",
)
# (c) tampered assertion (user name changed after signing) is refused
bad = re.sub(
    r'(Name="openstack_user".*?AttributeValue[^>]*>)alice<',
    r"\1admin<",
    ecp_for("berlin", "paris", tokA),
    count=1,
    flags=re.S,
)
s = requests.Session()
r1 = s.post(
    sp_ecp_url("paris"),
    data=bad,
    headers={"Content-Type": "application/vnd.paos+xml"},
    allow_redirects=False,
)
r2 = s.get(sp_auth_url("paris", "berlin" if MODE != "shared" else "peers"), allow_redirects=False)
check(
    r1.status_code not in (302, 303) and "X-Subject-Token" not in r2.headers,
    f"tampered assertion: paos {r1.status_code}, auth {r2.status_code}",
)

json.dump(
    {
        "cases": results,
        "breakdown_ms": breakdown,
        "demo_ids": demo_id,
        "neg_foreign_destination": neg_b,
        "failures": failures,
    },
    open("results/test.json", "w"),
    indent=1,
)
print("ALL CHECKS PASSED" if not failures else f"{len(failures)} FAILURES")
sys.exit(1 if failures else 0)
