"""``scoped lab``: finding deploy/lab/, the command line it runs, and what it
passes back. The lab itself is exercised by tests/e2e (real OpenStack)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from scoped_cli import lab as lab_module
from scoped_cli import main as cli
from scoped_cli.lab import LabError, command, lab_home, lab_script

from scoped.errors import EXIT_BAD_INPUT

ROOT = Path(__file__).resolve().parents[2]


def test_the_lab_is_found_beside_the_package_in_a_checkout() -> None:
    assert lab_home() == ROOT / "deploy" / "lab"
    assert lab_script() == ROOT / "deploy" / "lab" / "lab"


def test_without_deploy_lab_the_error_says_a_checkout_is_needed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(lab_module, "lab_home", lambda: tmp_path / "deploy" / "lab")
    with pytest.raises(LabError, match="source checkout"):
        lab_script()
    assert cli.main(["lab", "up", "--dir", str(tmp_path / "lab")]) == EXIT_BAD_INPUT


def test_command_line_and_checks(tmp_path: Path) -> None:
    argv = command("up", tmp_path / "new", ["Berlin", "Paris"])
    assert argv == ["bash", str(ROOT / "deploy" / "lab" / "lab"), "up", "Berlin", "Paris"]
    with pytest.raises(LabError, match="bad site name"):
        command("up", tmp_path, ["Ber lin"])
    with pytest.raises(LabError, match="no lab in"):
        command("status", tmp_path / "missing")


def fake_lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: int) -> Path:
    script = tmp_path / "lab"
    script.write_text(f'#!/bin/bash\necho "$LAB_DIR $*" > "$LAB_DIR/seen"\nexit {status}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(lab_module, "lab_script", lambda: script)
    return script


def test_runs_the_script_with_lab_dir_and_passes_its_status_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_lab(monkeypatch, tmp_path, 3)
    state = tmp_path / "state"
    state.mkdir()
    assert cli.main(["lab", "down", "--dir", str(state), "--sites", "Denver"]) == 3
    assert (state / "seen").read_text() == f"{state} down Denver\n"
    fake_lab(monkeypatch, tmp_path, 0)
    assert cli.main(["lab", "status", "--dir", str(state)]) == 0
    assert (state / "seen").read_text() == f"{state} status\n"
