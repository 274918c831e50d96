"""``scoped lab``: finding deploy/lab/, the command line it runs, and what it
passes back. The lab itself is exercised by tests/e2e (real OpenStack)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from scoped_cli import lab as lab_module
from scoped_cli import main as cli
from scoped_cli.lab import LabError, command, known_sites, lab_home, lab_script, link_message

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


# ---- the WAN: up --wan FILE, scoped lab link ---------------------------------------


def test_up_checks_the_wan_file_and_hands_it_to_the_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "lab"
    script.write_text('#!/bin/bash\necho "${LAB_WAN:-none}" > "$LAB_DIR/wan-seen"\n')
    monkeypatch.setattr(lab_module, "lab_script", lambda: script)
    state = tmp_path / "state"
    state.mkdir()
    wan = tmp_path / "wan.yaml"
    wan.write_text("links:\n  - {between: [Berlin, Paris], delay: [4, 6]}\n")
    assert cli.main(["lab", "up", "--dir", str(state), "--wan", str(wan)]) == 0
    assert (state / "wan-seen").read_text() == f"{wan}\n"
    assert cli.main(["lab", "up", "--dir", str(state), "--wan", "default"]) == 0
    assert (state / "wan-seen").read_text() == "default\n"
    monkeypatch.setenv("LAB_WAN", str(wan))  # only --wan says it, for scoped lab up
    assert cli.main(["lab", "up", "--dir", str(state)]) == 0
    assert (state / "wan-seen").read_text() == "none\n"


@pytest.mark.parametrize(
    ("text", "sites", "message"),
    [
        ("dealy: 5\n", [], "wan.yaml: unknown key 'dealy' (expected one of: delay, jitter, "
         "bandwidth, links)"),
        ("links:\n  - {between: [Berlin, Rome]}\n", [], "wan.yaml: links[0].between: unknown "
         "site 'Rome' (the lab's sites: Berlin, Denver, Paris)"),
        ("links:\n  - {between: [Denver, Rome]}\n", ["--sites", "Denver"], "unknown site 'Rome' "
         "(the lab's sites: Denver)"),
        ("links:\n  - {between: [Berlin, Denver], delay: x}\n", [], "links[0].delay: expected "
         "a delay in ms (a number), got 'x'"),
        ("links: [\n", [], "wan.yaml: not valid YAML at line 2"),
    ],
)  # fmt: skip
def test_a_bad_wan_file_is_one_line_and_exit_2_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    sites: list[str],
    message: str,
) -> None:
    fake_lab(monkeypatch, tmp_path, 0)
    wan = tmp_path / "wan.yaml"
    wan.write_text(text)
    state = tmp_path / "state"
    argv = ["lab", "up", "--dir", str(state), "--wan", str(wan), *sites]
    assert cli.main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("scoped lab: ") and message in err, err
    assert err.count("\n") == 1
    assert not (state / "seen").exists()


def test_a_missing_wan_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert cli.main(["lab", "up", "--dir", str(tmp_path), "--wan", str(missing)]) == 2
    assert f"--wan {missing}: cannot be read: No such file or directory" in capsys.readouterr().err


def test_the_wan_may_name_the_sites_the_lab_has(tmp_path: Path) -> None:
    for name, index in (("Rome", 3), ("Berlin", 0)):
        (tmp_path / name.lower()).mkdir()
        (tmp_path / name.lower() / "name").write_text(name + "\n")
        (tmp_path / name.lower() / "index").write_text(f"{index}\n")
    assert known_sites(tmp_path) == ["Berlin", "Rome"]
    assert known_sites(tmp_path, ["Oslo"]) == ["Berlin", "Rome", "Oslo"]
    assert known_sites(tmp_path / "new") == ["Berlin", "Denver", "Paris"]


def lab_with_links(tmp_path: Path) -> Path:
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "forwards").write_text(
        "Berlin Denver 20100 18100 gateway\nDenver Berlin 21000 18000 gateway\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cut", "Berln", "Denver"], "link Berln Denver: unknown site 'Berln' (the lab's "
         "sites: Berlin, Denver)"),
        (["cut", "Berlin", "Berlin"], "link Berlin Berlin: a link joins two different sites"),
        (["cut", "Berlin", "Denver", "--mode", "drop"], "--mode 'drop': expected blackhole "
         "or refuse"),
        (["set", "Berlin", "Denver", "--delay", "fast"], "--delay 'fast': 'fast' is not a number"),
        (["set", "Berlin", "Denver", "--delay", "1,2,3"], "--delay '1,2,3': expected one "
         "value, or two: A->B,B->A"),
        (["set", "Berlin", "Denver", "--delay", "-5"], "--delay: expected a delay from 0"),
        (["set", "Berlin", "Denver", "--bandwidth", "0"], "--bandwidth: expected a bandwidth "
         "above 0"),
        (["set", "Berlin", "Denver", "--jitter", "1.5"], "--jitter: expected a jitter from 0 "
         "to 1"),
        (["set", "Berlin", "Denver"], "link set: give --delay, --jitter and/or --bandwidth"),
    ],
)  # fmt: skip
def test_bad_link_commands_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    state = lab_with_links(tmp_path)
    assert cli.main(["lab", "link", *args, "--dir", str(state)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("scoped lab: ") and message in err, err
    assert err.count("\n") == 1


def test_link_commands_need_a_lab_and_its_emulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["lab", "link", "heal", "Berlin", "Denver", "--dir"]
    assert cli.main([*argv, str(tmp_path / "none")]) == EXIT_BAD_INPUT
    assert "no lab in" in capsys.readouterr().err
    assert cli.main([*argv, str(tmp_path)]) == EXIT_BAD_INPUT
    assert "links/forwards is missing (scoped lab up --dir)" in capsys.readouterr().err
    assert cli.main([*argv, str(lab_with_links(tmp_path))]) == 1
    assert "the link emulator of" in capsys.readouterr().err


def test_link_message() -> None:
    assert link_message("cut", "A", "B") == {"cmd": "cut", "a": "A", "b": "B", "mode": "blackhole"}
    assert link_message("set", "A", "B", delay="70,80", bandwidth="none,10", jitter="0") == {
        "cmd": "set", "a": "A", "b": "B", "delay": [70.0, 80.0], "bandwidth": [None, 10.0],
        "jitter": 0.0,
    }  # fmt: skip
    assert link_message("set", "A", "B", delay="5")["delay"] == [5.0, 5.0]
    with pytest.raises(LabError, match="unknown link action"):
        link_message("break", "A", "B")
