"""The seeds' headline table, measured on the lab: boot 1-DC, x-DC, *-DC and
list over sites, with every WAN link up and with Denver cut off (a black
hole, then refused), with the real ``openstack`` CLI.

    .venv/bin/scoped lab up --dir lab            # first (the default WAN)
    .venv/bin/python tests/bench/bench_edge.py [--dir lab] [--skip-image]

Each cell: whether it worked (else the first line the user saw), the wall
time of the whole command (to ACTIVE for a boot; the CLI's own start-up,
~1.5-2.5 s here, included), and, for a boot, what exists afterwards at each
site under the cell's server name, read straight at each site (a client
reaches every site directly: only site-to-site traffic crosses the links).
Then the same for a list over ``*`` and over ``Berlin&Denver?``, and a
100 MiB image read from Denver through Berlin over a link capped at
100 Mbit/s. Every server made is deleted; every link is healed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
SITES = ("Berlin", "Denver", "Paris")


@dataclass(frozen=True)
class Row:
    kind: str
    what: str
    scope: str
    image: str = ""
    """Boot from this image; empty: an image list."""
    network: str = "net1"
    """The boot's network (each site has its own net1, under its own id; an
    ``&`` boot gets each site's own)."""


ROWS = (
    Row("1-DC", "boot at Berlin", "<nova: Berlin>", "cirros-berlin"),
    Row("x-DC", "boot at Berlin, Denver's image", "<nova: Berlin, glance: Denver>",
        "cirros-denver"),
    Row("x-DC", "boot at Berlin, image of Denver|Paris", "<nova: Berlin, glance: Denver|Paris>",
        "tiny"),
    Row("*-DC", "boot at Berlin and Denver", "<nova: Berlin&Denver, glance: Denver>",
        "cirros-denver"),
    Row("*-DC", "boot at Berlin and Paris", "<nova: Berlin&Paris, glance: Berlin>",
        "cirros-berlin"),
    Row("*-DC", "image list at 3 sites", "<glance: Berlin&Denver&Paris>"),
    Row("list", "server list over *", "<nova: *>"),
    Row("list", "server list, Denver optional", "<nova: Berlin&Denver?>"),
)  # fmt: skip

COLUMNS = (("global", None), ("Denver black-holed", "blackhole"), ("Denver refused", "refuse"))


@dataclass
class Cell:
    ok: bool
    seconds: float
    said: str
    left: dict[str, int]


class Lab:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        self.env["OS_CLIENT_CONFIG_FILE"] = str(directory / "clouds.yaml")

    def scoped(self, *args: str) -> None:
        subprocess.run(
            [str(BIN / "scoped"), "lab", *args, "--dir", str(self.dir)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def openstack(
        self, *args: str, cloud: str = "Berlin", timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "openstack"), "--os-cloud", cloud, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def servers_named(self, name: str) -> dict[str, list[str]]:
        """The ids of servers called ``name`` at each site, asked straight there."""
        found: dict[str, list[str]] = {}
        for site in SITES:
            out = self.openstack("server", "list", "--name", name, "-f", "json", cloud=site)
            rows = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
            found[site] = [r["ID"] for r in rows]
        return found

    def cut_denver(self, mode: str) -> None:
        for other in ("Berlin", "Paris"):
            self.scoped("link", "cut", other, "Denver", "--mode", mode)

    def heal_denver(self) -> None:
        for other in ("Berlin", "Paris"):
            self.scoped("link", "heal", other, "Denver")


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:110] if lines else ""


def run_cell(lab: Lab, row: Row, tag: str) -> Cell:
    if not row.image:
        argv = ["server", "list"] if row.what.startswith("server") else ["image", "list"]
        start = time.perf_counter()
        out = lab.openstack(*argv, "-f", "json", "--os-scope", row.scope, timeout=300)
        seconds = time.perf_counter() - start
        if out.returncode != 0:
            return Cell(False, seconds, first_line(out.stderr), {})
        return Cell(True, seconds, f"{len(json.loads(out.stdout))} items", {})
    name = f"edge-{tag}"
    start = time.perf_counter()
    out = lab.openstack(
        "server", "create", name, "--flavor", "m1.tiny", "--image", row.image,
        *(["--nic", "none"] if row.network == "none" else ["--network", row.network]),
        "--wait", "-f", "json", "--os-scope", row.scope,
        timeout=600,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    ok = out.returncode == 0 and json.loads(out.stdout or "{}").get("status") == "ACTIVE"
    said = "ACTIVE" if ok else first_line(out.stderr or out.stdout)
    return Cell(ok, seconds, said, {})


def leftovers_and_cleanup(lab: Lab, tag: str) -> dict[str, int]:
    name = f"edge-{tag}"
    found = lab.servers_named(name)
    for site, ids in found.items():
        for server in ids:
            lab.openstack("server", "delete", "--wait", server, cloud=site, timeout=300)
    return {site: len(ids) for site, ids in found.items()}


def image_over_capped_link(lab: Lab) -> str:
    """100 MiB from Denver's Glance to a client at Berlin, the link capped at 100 Mbit/s."""
    size = 100 * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.img"
        with path.open("wb") as f:
            f.truncate(size)
        made = lab.openstack(
            "image", "create", "edge-big", "--file", str(path), "--disk-format", "raw",
            "--container-format", "bare", "-f", "json", cloud="Denver", timeout=600,
        )  # fmt: skip
        if made.returncode != 0:
            return f"could not make the image at Denver: {first_line(made.stderr)}"
        image_id = json.loads(made.stdout)["id"]
        lab.scoped("link", "set", "Berlin", "Denver", "--bandwidth", "100")
        try:
            start = time.perf_counter()
            got = lab.openstack(
                "image", "save", image_id, "--file", str(Path(tmp) / "got.img"),
                "--os-scope", "<glance: Denver>", timeout=600,
            )  # fmt: skip
            seconds = time.perf_counter() - start
        finally:
            lab.scoped("link", "set", "Berlin", "Denver", "--bandwidth", "none")
            lab.openstack("image", "delete", image_id, cloud="Denver")
        if got.returncode != 0:
            return f"failed after {seconds:.1f} s: {first_line(got.stderr)}"
        received = (Path(tmp) / "got.img").stat().st_size
    mbit = received * 8 / seconds / 1e6
    return (
        f"{received / 2**20:.0f} MiB in {seconds:.1f} s (whole command): {mbit:.0f} Mbit/s, "
        f"{mbit:.0f}% of the 100 Mbit/s cap"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(ROOT / "lab"))
    parser.add_argument("--skip-image", action="store_true", help="skip the 100 MiB image")
    parser.add_argument("--rows", help="only these rows, by number from 0 (e.g. 3,4)")
    parser.add_argument("--columns", help="only these columns: global,blackhole,refuse")
    args = parser.parse_args()
    lab = Lab(Path(args.dir))
    status = subprocess.run(
        [str(BIN / "scoped"), "lab", "status", "--dir", str(lab.dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    links = [ln for ln in status.stdout.splitlines() if "<->" in ln or "->" in ln]
    print("links:\n" + "\n".join(links))
    cells: dict[tuple[int, str], Cell] = {}
    rows = {int(r) for r in args.rows.split(",")} if args.rows else set(range(len(ROWS)))
    columns = set(args.columns.split(",")) if args.columns else {"global", "blackhole", "refuse"}
    try:
        for label, mode in COLUMNS:
            if (mode or "global") not in columns:
                continue
            if mode is not None:
                lab.cut_denver(mode)
            try:
                for i, row in enumerate(ROWS):
                    if i not in rows:
                        continue
                    tag = f"{i}-{mode or 'up'}-{os.getpid()}"
                    cell = run_cell(lab, row, tag)
                    if row.image:  # read straight at each site: no link is crossed
                        cell.left = leftovers_and_cleanup(lab, tag)
                    cells[(i, label)] = cell
                    print(f"  {row.kind:5} {row.what:38} {label:20} {fmt(cell)}", flush=True)
            finally:
                if mode is not None:
                    lab.heal_denver()
        if not args.skip_image:
            print("\n100 MiB image Denver -> Berlin, link capped at 100 Mbit/s:")
            print("  " + image_over_capped_link(lab))
    finally:
        lab.heal_denver()
    print_table(cells)


def fmt(cell: Cell) -> str:
    left = ", ".join(f"{s} {n}" for s, n in cell.left.items() if n)
    head = f"ok {cell.seconds:5.1f} s" if cell.ok else f"FAIL {cell.seconds:5.1f} s"
    return f"{head}  {cell.said}" + (f"  [left: {left}]" if left else "")


def print_table(cells: dict[tuple[int, str], Cell]) -> None:
    labels = [label for label, _ in COLUMNS]
    print("\n| | scope | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for i, row in enumerate(ROWS):
        parts = []
        for label in labels:
            cell = cells.get((i, label))
            if cell is None:
                parts.append("not run")
                continue
            text = f"{'ok' if cell.ok else 'FAILED'} {cell.seconds:.1f} s"
            if not cell.ok:
                text += f": {cell.said}"
            kept = {s: n for s, n in cell.left.items() if n}
            if kept and not cell.ok:
                text += " (left: " + ", ".join(f"{s} {n}" for s, n in kept.items()) + ")"
            parts.append(text.replace("|", "\\|"))
        scope = row.scope.replace("|", "\\|")
        print(f"| {row.kind} {row.what} | `{scope}` | " + " | ".join(parts) + " |")


if __name__ == "__main__":
    main()
