"""The installed ``scoped`` command, run as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCOPED = shutil.which("scoped", path=str(Path(sys.executable).parent)) or shutil.which("scoped")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    if SCOPED is None:
        pytest.fail("the scoped console script is not installed (pip install -e .)")
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [SCOPED, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_explain_json_is_exactly_the_design_example() -> None:
    out = run(
        "explain",
        "--json",
        "--sites",
        "Berlin,Denver,Paris",
        "--home",
        "Berlin",
        "<nova: Berlin&Denver, glance: Denver|Paris>",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "canonical": "<compute: Berlin&Denver, image: Denver|Paris>",
        "plan": {
            "compute": {"all": [{"site": "Berlin"}, {"site": "Denver"}]},
            "image": {"first": [{"site": "Denver"}, {"site": "Paris"}]},
            "*": {"site": "Berlin"},
        },
    }
    assert out.stdout.count("\n") == 1


def test_explain_flattens_but_drops_nothing() -> None:
    out = run("explain", "--json", "<nova: A&(B&C)&A, *: X>")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["canonical"] == "<compute: A&B&C&A, *: X>"
    assert result["plan"]["compute"] == {"all": [{"site": "A"}, {"site": "B"}, {"site": "C"}]}
    assert result["plan"]["*"] == {"site": "X"}


def test_explain_marks_optional_and_expands_star() -> None:
    out = run("explain", "--json", "--sites", "A,B,C", "<glance: A&(B|C)?, *: *>")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)["plan"]
    assert plan["image"] == {
        "all": [{"site": "A"}, {"first": [{"site": "B"}, {"site": "C"}], "optional": True}]
    }
    assert plan["*"] == {"all": [{"site": "A"}, {"site": "B"}, {"site": "C"}]}


def test_explain_omits_the_default_without_home_or_star_key() -> None:
    out = run("explain", "--json", "<nova: A>")
    assert json.loads(out.stdout)["plan"] == {"compute": {"site": "A"}}


def test_explain_human_form_shows_the_tree() -> None:
    out = run("explain", "--sites", "Berlin,Denver", "--home", "Berlin", "<nova: Berlin&Denver?>")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "scope: <compute: Berlin&Denver?>"
    assert "  - Denver (optional)" in lines
    assert lines[-1] == "* (every other service): Berlin"


@pytest.mark.parametrize(
    ("args", "fragment", "caret_col"),
    [
        (["<nova: Berlin&&Denver>"], "expected a site name", 14),
        (["--sites", "Berlin,Denver", "<nova: Berln>"], "did you mean 'Berlin'", 7),
        (["<novaa: Berlin>"], "unknown service 'novaa'", 1),
        (["<nova: A, compute: B>"], "both name service 'compute'", 10),
        (["x" * 5000], "at most 4096 characters", None),
    ],
)
def test_bad_scope_exits_2_with_a_caret_and_no_traceback(
    args: list[str], fragment: str, caret_col: int | None
) -> None:
    out = run("explain", *args)
    assert out.returncode == 2
    assert out.stdout == ""
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr
    if caret_col is not None:
        caret_line = out.stderr.splitlines()[-1]
        assert caret_line == "  " + " " * caret_col + "^"


def test_bad_sites_option_is_a_usage_error() -> None:
    out = run("explain", "--sites", "A,,B", "<nova: A>")
    assert out.returncode == 2
    assert "--sites" in out.stderr
    assert "Traceback" not in out.stderr


def test_url_prints_the_scoped_auth_url_and_refuses_a_bad_scope() -> None:
    out = run("url", "--gateway", "http://127.0.0.1:18000", "{nova: Berlin&Denver}")
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert url == "http://127.0.0.1:18000/scope/PGNvbXB1dGU6IEJlcmxpbiZEZW52ZXI-/identity/v3"
    bad = run("url", "--gateway", "http://127.0.0.1:18000", "<nova: Berlin&>")
    assert bad.returncode == 2
    assert "bad scope at line 1, column 15" in bad.stderr and "Traceback" not in bad.stderr
    odd = run("url", "--gateway", "127.0.0.1:18000/x", "<nova: Berlin>")
    assert odd.returncode == 2
    assert "--gateway takes the gateway's origin" in odd.stderr
