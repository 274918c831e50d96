"""Config validation: every error names the file and the key (docs/design.md §8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scoped.config import Limits, load_config, parse_config
from scoped.errors import ConfigError

GOOD: dict[str, Any] = {
    "site": "Berlin",
    "sites": {
        "Berlin": {"endpoints": {"compute": "http://127.0.0.1:8001/compute"}},
        "Denver": {"endpoints": {"nova": "http://127.0.0.1:8002/compute/"}},
        "Paris": {
            "auth": {
                "auth_url": "http://127.0.0.1:5003/v3",
                "username": "scoped",
                "password": "secret",
                "project_name": "service",
            }
        },
    },
    "backends": {"compute": "http://127.0.0.1:18774", "volumev3": "http://127.0.0.1:18776"},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one key (dotted path) replaced; value ... deletes it."""
    import copy  # noqa: PLC0415

    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_the_design_example_loads(tmp_path: Path) -> None:
    import yaml  # noqa: PLC0415

    f = tmp_path / "scoped.yaml"
    f.write_text(yaml.safe_dump(GOOD))
    config = load_config(f)
    assert config.site_names == ("Berlin", "Denver", "Paris")
    assert config.sites["Denver"].endpoints == {"compute": "http://127.0.0.1:8002/compute"}
    assert config.backends["block-storage"] == "http://127.0.0.1:18776"  # alias normalised
    assert config.sites["Paris"].auth is not None
    assert config.sites["Paris"].auth.user_domain_name == "Default"
    assert config.limits == Limits()


@pytest.mark.parametrize(
    ("path", "value", "fragments"),
    [
        ("site", "Berln", ["site:", "did you mean 'Berlin'"]),
        ("site", ..., ["site:", "expected the name"]),
        ("sites.Denver.endpoints.nova", "ftp://x", ["sites.Denver.endpoints.nova", "http://"]),
        ("sites.Denver.endpoints.novaa", "http://x", ["sites.Denver.endpoints.novaa", "'nova'"]),
        ("sites.Denver.endpoint", {}, ["sites.Denver.endpoint: unknown key", "'endpoints'"]),
        ("sites.Paris.auth.password", ..., ["sites.Paris.auth.password", "non-empty string"]),
        ("sites.Denver", {}, ["sites.Denver", "'endpoints' or 'auth'"]),
        ("backends.compute", 5, ["backends.compute", "a URL"]),
        ("timeouts", {"connect": -1}, ["timeouts.connect", ">= 0.001"]),
        ("limits", {"max_fanout": "many"}, ["limits.max_fanout", "a number"]),
        ("extra", 1, ["extra: unknown key"]),
        ("sites.Denver.tokens", {"mode": "shared"}, ["sites.Denver.tokens.mode", "origin or"]),
        (
            "sites.Denver.tokens",
            {"mode": "federated", "project_domain_name": "Default"},
            ["sites.Denver.tokens.project_name", "or neither: the user's own project"],
        ),
        ("paging", {"memcache": ["h:1"]}, ["paging.memcache: unknown key", "'memcached'"]),
        ("paging", {"memcached": ["localhost"]}, ["paging.memcached", "HOST:PORT", "'localhost'"]),
        ("paging", {"memcached": ["h:99999"]}, ["paging.memcached", "a port from 1 to 65535"]),
        ("paging", {"memcached": 11211}, ["paging.memcached", "or a list of them"]),
        ("paging", {"ttl": 0}, ["paging.ttl", ">= 1"]),
    ],
)
def test_errors_name_the_file_and_key(path: str, value: Any, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_(path, value), "/etc/scoped/scoped.yaml")
    message = str(info.value)
    assert message.startswith("/etc/scoped/scoped.yaml: ")
    for fragment in fragments:
        assert fragment in message


def test_paging_names_its_memcached_servers_and_ttl() -> None:
    assert parse_config(with_("site", "Berlin"), "<t>").paging.memcached == ()
    one = parse_config(with_("paging", {"memcached": "127.0.0.1:11211"}), "<t>").paging
    assert one.memcached == ("127.0.0.1:11211",)
    assert one.ttl == 86400
    two = parse_config(with_("paging", {"memcached": ["a:1", "[::1]:2"], "ttl": 600}), "<t>")
    assert two.paging.memcached == ("a:1", "[::1]:2")
    assert two.paging.ttl == 600


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(top)


def test_gateway_command_reports_config_errors_without_traceback(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    f = tmp_path / "scoped.yaml"
    f.write_text("site: Nowhere\nsites: {Berlin: {endpoints: {compute: 'http://127.0.0.1:1'}}}\n")
    scoped = Path(sys.executable).parent / "scoped"
    out = subprocess.run(
        [str(scoped), "gateway", "--config", str(f), "--listen", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert f"{f}: site:" in out.stderr
    assert "Traceback" not in out.stderr
