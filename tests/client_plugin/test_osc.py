"""The real ``openstack`` command (stock python-openstackclient, this project
installed) against a real stand-in site: ``--os-scope``, ``OS_SCOPE`` and the
cloud's ``scope`` reach every authenticated request, the token request stays
untouched, and a bad scope stops the command before any request."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.client_plugin.osc import (
    EXTRA_CATALOG,
    SERVER_FIELDS,
    Result,
    authenticated,
    cloud,
    clouds_yaml,
    extra_services,
    is_token_request,
    run_openstack,
    split_token,
)
from tests.standin import SiteData, build_app, make_items, serve_in_thread

SCOPE = "<compute: Berlin&Denver, *: Berlin>"
SCOPED = Path(sys.executable).parent / "scoped"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[SiteData, str]]:
    data = SiteData(
        "Berlin",
        servers=make_items("vm", 2, seed="B", **SERVER_FIELDS),
        images=make_items("img", 2, seed="B"),
        networks=make_items("net", 2, seed="B"),
        users=make_items("user", 2, seed="B"),
        catalog=dict(EXTRA_CATALOG),
    )
    with serve_in_thread(extra_services(build_app(data))) as url:
        yield data, url


@dataclass
class Env:
    data: SiteData
    home: Path
    clouds: Path

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return run_openstack(self.home, self.clouds, *args, env=env)

    def show(self, *args: str, env: dict[str, str] | None = None) -> dict[str, str | None]:
        result = self.run(*args, "scope", "show", "-f", "json", env=env)
        assert result.status == 0, result.stderr
        shown: dict[str, str | None] = json.loads(result.stdout)
        return shown


@pytest.fixture
def osc(served: tuple[SiteData, str], tmp_path: Path) -> Iterator[Env]:
    data, url = served
    auth_url = f"{url}/identity/v3"
    path = clouds_yaml(
        tmp_path / "clouds.yaml",
        {
            "berlin": cloud(auth_url, "Berlin"),
            "noregion": cloud(auth_url),
            "scoped": cloud(auth_url, "Berlin", scope="<nova: Berlin&Denver>"),
            "mapped": cloud(auth_url, "Berlin", scope={"nova": "Berlin&Denver", "glance": "Paris"}),
            "bad": cloud(auth_url, "Berlin", scope="<nova: Berlin&>"),
            "hooked": cloud(
                auth_url,
                "Berlin",
                scope="<nova: Berlin&Denver>",
                vendor_hook="tests.client_plugin.probe:vendor_hook",
            ),
        },
    )
    data.received.clear()
    yield Env(data, tmp_path, path)
    data.received.clear()


def assert_scoped(data: SiteData, scope: str = SCOPE) -> None:
    """Every request with a token carries ``scope`` in X-Scope and on the token;
    the token request carries neither; no request without a token has a scope."""
    tokens = [r for r in data.received if is_token_request(r)]
    assert len(tokens) == 1
    assert "x-scope" not in tokens[0].headers
    assert "x-auth-token" not in tokens[0].headers
    served = authenticated(data.received)
    assert served
    for r in served:
        assert r.headers["x-scope"] == scope, r.path
        bare, carried = split_token(r.headers["x-auth-token"])
        assert bare.startswith("tok-Berlin-")
        assert carried == scope, r.path
    for r in data.received:
        if "x-auth-token" not in r.headers:
            assert "x-scope" not in r.headers, r.path


def test_help_shows_the_option_and_its_variable(osc: Env) -> None:
    result = osc.run("--help")
    assert result.status == 0
    assert "--os-scope <scope>" in result.stdout
    assert "(Env: OS_SCOPE)" in " ".join(result.stdout.split())
    assert "scope explain" in result.stdout and "scope show" in result.stdout
    assert osc.data.received == []


@pytest.mark.parametrize(
    ("command", "path"),
    [
        ("server list", "/compute/v2.1/servers/detail"),
        ("image list", "/image/v2/images"),
        ("network list", "/networking/v2.0/networks"),
        ("user list", "/identity/v3/users"),
        ("volume list", "/volume/v3/volumes/detail"),
    ],
)
def test_every_authenticated_request_carries_the_scope(osc: Env, command: str, path: str) -> None:
    result = osc.run(
        "--os-cloud", "berlin", "--os-scope", "{nova: Berlin & Denver}", *command.split()
    )
    assert result.status == 0, result.stderr
    assert path in {r.path for r in authenticated(osc.data.received)}
    assert_scoped(osc.data)


def test_os_scope_from_the_environment(osc: Env) -> None:
    result = osc.run("--os-cloud", "berlin", "server", "list", env={"OS_SCOPE": "<nova: Denver>"})
    assert result.status == 0, result.stderr
    assert_scoped(osc.data, "<compute: Denver, *: Berlin>")


def test_the_clouds_scope_in_clouds_yaml(osc: Env) -> None:
    result = osc.run("--os-cloud", "scoped", "server", "list", "-f", "json")
    assert result.status == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2
    assert_scoped(osc.data)


def test_without_a_scope_nothing_is_added(osc: Env) -> None:
    result = osc.run("--os-cloud", "berlin", "server", "list")
    assert result.status == 0, result.stderr
    assert authenticated(osc.data.received)
    for r in osc.data.received:
        assert "x-scope" not in r.headers
        if "x-auth-token" in r.headers:
            assert split_token(r.headers["x-auth-token"])[1] is None


def test_without_a_region_the_home_is_the_keystone_authenticated_with(osc: Env) -> None:
    result = osc.run("--os-cloud", "noregion", "--os-scope", "<nova: Denver>", "server", "list")
    assert result.status == 0, result.stderr
    assert_scoped(osc.data, "<compute: Denver, *: Berlin>")


@pytest.mark.parametrize(
    ("args", "env", "origin"),
    [
        (["--os-cloud", "berlin", "--os-scope", "<nova: Berlin&>"], {}, "--os-scope"),
        (["--os-cloud", "berlin"], {"OS_SCOPE": "<nova: Berlin&>"}, "OS_SCOPE"),
        (["--os-cloud", "bad"], {}, "clouds.yaml, cloud 'bad', key 'scope'"),
    ],
)
def test_a_bad_scope_exits_2_with_a_caret_before_any_request(
    osc: Env, args: list[str], env: dict[str, str], origin: str
) -> None:
    result = osc.run(*args, "server", "list", env=env)
    assert result.status == 2
    assert result.stderr.startswith(f"openstack: {origin}: bad scope at line 1, column 15: ")
    lines = result.stderr.rstrip("\n").splitlines()
    assert lines[-2:] == ["  <nova: Berlin&>", "                ^"]
    assert "Traceback" not in result.stderr
    assert osc.data.received == []  # no token request, no discovery: nothing


def test_scope_show_completes_with_the_home_site(osc: Env) -> None:
    shown = osc.show("--os-cloud", "berlin", "--os-scope", "{glance: Denver|Paris, nova: Berlin}")
    assert shown == {
        "scope": "<compute: Berlin, image: Denver|Paris, *: Berlin>",
        "home": "Berlin",
        "source": "--os-scope",
        "token_suffix": "!scope!PGNvbXB1dGU6IEJlcmxpbiwgaW1hZ2U6IERlbnZlcnxQYXJpcywgKjogQmVybGluPg",
    }
    assert split_token("t" + str(shown["token_suffix"]))[1] == shown["scope"]
    assert osc.data.received == []  # no authentication needed


def test_precedence_option_then_environment_then_clouds_yaml(osc: Env) -> None:
    env = {"OS_SCOPE": "<nova: Paris>"}
    assert osc.show("--os-cloud", "scoped")["scope"] == SCOPE
    assert osc.show("--os-cloud", "scoped", env=env)["source"] == "OS_SCOPE"
    both = osc.show("--os-cloud", "scoped", "--os-scope", "<nova: Oslo>", env=env)
    assert (both["scope"], both["source"]) == ("<compute: Oslo, *: Berlin>", "--os-scope")
    mapped = osc.show("--os-cloud", "mapped")
    assert mapped["scope"] == "<compute: Berlin&Denver, image: Paris, *: Berlin>"
    assert mapped["source"] == "clouds.yaml, cloud 'mapped', key 'scope'"


def test_the_home_site_is_the_region(osc: Env) -> None:
    scope = ["--os-scope", "<nova: Denver>"]
    assert osc.show("--os-cloud", "berlin", *scope)["scope"] == "<compute: Denver, *: Berlin>"
    by_env = osc.show("--os-cloud", "noregion", *scope, env={"OS_REGION_NAME": "Paris"})
    assert by_env["scope"] == "<compute: Denver, *: Paris>"
    by_option = osc.show("--os-cloud", "noregion", "--os-region-name", "Oslo", *scope)
    assert by_option["scope"] == "<compute: Denver, *: Oslo>"
    starred = osc.show("--os-cloud", "berlin", "--os-scope", "<nova: Denver, *: Paris>")
    assert starred["scope"] == "<compute: Denver, *: Paris>"


def test_scope_show_of_a_bad_scope_exits_2(osc: Env) -> None:
    result = osc.run("--os-cloud", "bad", "scope", "show")
    assert result.status == 2
    assert "clouds.yaml, cloud 'bad', key 'scope': bad scope" in result.stderr
    assert result.stderr.rstrip().endswith("^")


@pytest.mark.parametrize(
    "args",
    [
        ["--json", "--sites", "Berlin,Denver,Paris", "--home", "Berlin",
         "<nova: Berlin&Denver, glance: Denver|Paris>"],
        ["--sites", "Berlin,Denver", "<nova: *, glance: Denver?>"],
        ["<nova: Berlin & (Denver | Paris)?>"],
    ],
)  # fmt: skip
def test_scope_explain_is_scoped_explain(osc: Env, args: list[str]) -> None:
    ours = osc.run("scope", "explain", *args)
    theirs = subprocess.run(
        [str(SCOPED), "explain", *args], capture_output=True, text=True, check=False
    )
    assert ours.status == theirs.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout
    assert osc.data.received == []


def test_scope_explain_of_a_bad_scope_exits_2_with_a_caret(osc: Env) -> None:
    result = osc.run("scope", "explain", "--sites", "Berlin,Denver", "<nova: Berln>")
    assert result.status == 2
    assert result.stderr.splitlines() == [
        "openstack scope explain: bad scope at line 1, column 8: unknown site 'Berln'; "
        "did you mean 'Berlin'?",
        "  <nova: Berln>",
        "         ^",
    ]


def test_the_clouds_own_vendor_hook_still_runs(osc: Env) -> None:
    marker = osc.home / "hooked"
    result = osc.run(
        "--os-cloud",
        "hooked",
        "server",
        "list",
        env={"PYTHONPATH": str(Path(__file__).parents[2]), "PROBE_FILE": str(marker)},
    )
    assert result.status == 0, result.stderr
    assert marker.read_text() == "hooked"
    assert_scoped(osc.data)


def test_configuration_show_prints_the_scope_in_any_format(osc: Env) -> None:
    result = osc.run(
        "--os-cloud", "berlin", "--os-scope", '{"compute": "Berlin&Denver"}',
        "configuration", "show", "-f", "json",
    )  # fmt: skip
    assert result.status == 0, result.stderr
    assert json.loads(result.stdout)["scope"] == '{"compute": "Berlin&Denver"}'
