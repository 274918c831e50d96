"""Server start-up: a server that is not installed is a clear error, not a
traceback, and the default never needs the optional ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scoped_cli import main as cli

from scoped.errors import EXIT_BAD_INPUT

CONFIG = """\
site: Berlin
sites:
  Berlin: {}
backends:
  compute: http://127.0.0.1:9/compute
"""


@pytest.mark.parametrize(("server", "module"), [("granian", "granian"), ("aiohttp", "aiohttp")])
def test_a_server_that_is_not_installed_is_named_with_how_to_get_it(
    server: str,
    module: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "scoped.yaml"
    config.write_text(CONFIG)
    # None in sys.modules makes `import granian` raise ModuleNotFoundError,
    # as on an install without it.
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(sys.modules, f"{module}.web", raising=False)
    argv = ["gateway", "--config", str(config), "--listen", "127.0.0.1:9", "--server", server]
    assert cli.main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"--server {server}: the '{module}' package is not installed here" in err
    assert f"pip install {module}" in err
    assert "Traceback" not in err


def test_the_open_files_limit_is_raised_as_far_as_allowed() -> None:
    import resource  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    code = (
        "import resource; from scoped_cli.serve import raise_open_files_limit as r; "
        "print(r(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    returned, now = (int(x) for x in out.stdout.split())
    expected = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    assert returned == now == expected
    assert soft >= 0  # the test's own limit is untouched
