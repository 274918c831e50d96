"""The stand-in Keystones (tests/keystones.py) against keystoneauth1's own
Keystone2Keystone plugin: what the federation tests rely on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from tests.keystones import Keystone, keystones


@pytest.fixture(scope="module")
def sites() -> Iterator[dict[str, Keystone]]:
    with keystones("Berlin", "Denver") as found:
        yield found


def exchange(home: Keystone, token: str, sp: str, scoped: bool = True) -> v3.Keystone2Keystone:
    # Keystone makes an assertion only from a project-scoped token.
    if scoped:
        base = v3.Token(
            auth_url=f"{home.url}/v3",
            token=token,
            project_name="demo",
            project_domain_name="Default",
        )
    else:
        base = v3.Token(auth_url=f"{home.url}/v3", token=token)
    return v3.Keystone2Keystone(base, sp, project_name="demo", project_domain_name="Default")


def test_an_unscoped_home_token_gets_no_assertion(sites: dict[str, Keystone]) -> None:
    alice = sites["Berlin"].issue("alice")
    with pytest.raises(ks_exceptions.AuthorizationFailure, match="400"):
        exchange(sites["Berlin"], alice, "Denver", scoped=False).get_access(ks_session.Session())


def test_keystoneauth_gets_a_token_of_the_other_site_for_its_own_project(
    sites: dict[str, Keystone],
) -> None:
    berlin, denver = sites["Berlin"], sites["Denver"]
    denver.project("demo")
    alice = berlin.issue("alice")
    access = exchange(berlin, alice, "Denver").get_access(ks_session.Session())
    got = denver.valid(access.auth_token)
    assert got is not None and got.user_name == "alice" and got.idp == "Berlin"
    assert access.project_id == denver.projects["demo"] != berlin.projects["demo"]
    assert berlin.valid(access.auth_token) is None  # Denver's token means nothing at Berlin


def test_a_revoked_home_token_gets_nothing(sites: dict[str, Keystone]) -> None:
    berlin = sites["Berlin"]
    token = berlin.issue("alice")
    berlin.revoke(token)
    with pytest.raises(ks_exceptions.Unauthorized):
        exchange(berlin, token, "Denver").get_access(ks_session.Session())


def test_an_assertion_is_taken_once_and_only_from_a_trusted_idp(
    sites: dict[str, Keystone],
) -> None:
    berlin, denver = sites["Berlin"], sites["Denver"]
    body: Any = {
        "auth": {
            "identity": {"methods": ["token"], "token": {"id": berlin.issue("alice")}},
            "scope": {"service_provider": {"id": "Denver"}},
        }
    }
    assertion = requests.post(
        f"{berlin.url}/v3/auth/OS-FEDERATION/saml2/ecp", json=body, timeout=10
    ).text
    paos = f"{denver.url}/mellon/paosResponse"
    first = requests.post(paos, data=assertion, allow_redirects=False, timeout=10)
    assert first.status_code == 303
    again = requests.post(paos, data=assertion, allow_redirects=False, timeout=10)
    assert again.status_code == 400  # replayed
    forged = assertion.replace("Berlin|", "Mallory|", 1)  # an IdP Denver does not trust
    assert requests.post(paos, data=forged, allow_redirects=False, timeout=10).status_code == 400
