#!/usr/bin/env python3
"""Count the federation configuration each site carries (to show growth with N): peer IdP metadata files
in mellon, and Keystone objects: identity providers, mappings, protocols, service providers."""

import glob
import json
import os

import requests
from k2klib import SITES, admin_token, url

here = os.path.dirname(os.path.abspath(__file__))
inv = {}
for s in SITES:
    tok = admin_token(s)
    h = {"X-Auth-Token": tok}
    get = lambda p: requests.get(url(s) + p, headers=h).json()
    idps = get("/OS-FEDERATION/identity_providers")["identity_providers"]
    inv[s] = {
        "mellon_peer_idp_metadata_files": len(glob.glob(f"{here}/sites/{s}/mellon/peers/*.xml")),
        "identity_providers": len(idps),
        "mappings": len(get("/OS-FEDERATION/mappings")["mappings"]),
        "protocols": sum(
            len(get(f"/OS-FEDERATION/identity_providers/{i['id']}/protocols")["protocols"])
            for i in idps
        ),
        "service_providers": len(get("/OS-FEDERATION/service_providers")["service_providers"]),
        "shadow_domains_created_for_idps": len(
            [d for d in get("/domains")["domains"] if d["id"] != "default"]
        ),
    }
    print(s, inv[s])
json.dump(inv, open(f"{here}/results/inventory.json", "w"), indent=1)
