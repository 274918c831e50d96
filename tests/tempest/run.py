"""Tempest against one lab site, straight and through another site's gateway,
and the per-test outcomes compared (issue 14, part 4).

Opt-in, not collected by pytest (this file is not ``test_*.py``): a full run
takes tens of minutes. See tests/tempest/README.md.

    python tests/tempest/run.py                     # identity v3, image v2, compute, network
    python tests/tempest/run.py --regex '^tempest\\.api\\.identity\\.v3'
    python tests/tempest/run.py --gateway http://127.0.0.1:18050   # another Berlin gateway
    python tests/tempest/run.py --compare-only      # the table from the last runs

Run (a), ``straight``: Tempest's auth URL is the target site's own entry
(Denver's gateway, no scope). Run (b), ``through``: the auth URL is Berlin's
gateway with the scope ``<*: Denver>`` in the URL (docs/design.md §4), so
every call Tempest makes goes through Berlin's gateway to Denver.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REGEX = r"^tempest\.api\.(identity\.(admin\.)?v3|image\.v2|compute|network)\."
OK = ("success", "xfail")
SKIP = ("skip",)


def scope_url(gateway: str, scope: str, path: str = "/identity/v3") -> str:
    """docs/design.md §4: ``GATEWAY/scope/<unpadded base64url>/identity/v3``,
    by :func:`scoped.urlscope.scope_url` where scoped is importable (it writes
    the scope canonical), else encoded as given."""
    try:
        from scoped.urlscope import scope_url as scoped_url  # noqa: PLC0415
    except ImportError:
        pass
    else:
        return scoped_url(gateway, scope, path)
    encoded = base64.urlsafe_b64encode(scope.encode()).rstrip(b"=").decode()
    return f"{gateway.rstrip('/')}/scope/{encoded}{path}"


# -- the target's resources --------------------------------------------------


@dataclass
class Site:
    auth_url: str
    region: str
    username: str = "admin"
    password: str = "secret"
    project: str = "admin"
    domain: str = "Default"
    token: str = ""
    catalog: list[dict[str, object]] = field(default_factory=list)

    def login(self) -> None:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self.username,
                            "domain": {"name": self.domain},
                            "password": self.password,
                        }
                    },
                },
                "scope": {"project": {"name": self.project, "domain": {"name": self.domain}}},
            }
        }
        req = urllib.request.Request(
            self.auth_url.rstrip("/") + "/auth/tokens",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            self.token = resp.headers["x-subject-token"]
            self.catalog = json.load(resp)["token"]["catalog"]

    def endpoint(self, kind: str) -> str:
        for service in self.catalog:
            if service.get("type") != kind:
                continue
            for ep in service.get("endpoints", []):  # type: ignore[attr-defined]
                if ep["interface"] == "public" and ep["region_id"] == self.region:
                    return str(ep["url"]).rstrip("/")
        raise SystemExit(f"no public {kind} endpoint in region {self.region}")

    def get(self, kind: str, path: str) -> dict[str, object]:
        req = urllib.request.Request(
            self.endpoint(kind) + path, headers={"x-auth-token": self.token}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            data: dict[str, object] = json.load(resp)
            return data


def discover(site: Site, image_name: str, flavor_name: str) -> dict[str, str]:
    """IDs and lists tempest.conf needs, read from the target site."""
    site.login()
    images = site.get("image", "/v2/images?limit=100")["images"]
    by_name = {i["name"]: i["id"] for i in images}  # type: ignore[attr-defined]
    image = by_name.get(image_name) or by_name.get("tiny")
    if image is None:
        raise SystemExit(f"no image {image_name!r} (or 'tiny') at {site.region}")
    alt = by_name.get("tiny", image) if image_name != "tiny" else image
    flavors = site.get("compute", "/flavors")["flavors"]
    flavor = next((f["id"] for f in flavors if f["name"] == flavor_name), None)  # type: ignore[index]
    if flavor is None:
        raise SystemExit(f"no flavor {flavor_name!r} at {site.region}")
    others = [f["id"] for f in flavors if f["id"] != flavor]  # type: ignore[index]
    extensions = site.get("network", "/v2.0/extensions")["extensions"]
    aliases = sorted(e["alias"] for e in extensions)  # type: ignore[index]
    return {
        "image": image,
        "image_alt": alt,
        "flavor": flavor,
        "flavor_alt": others[0] if others else flavor,
        "network_extensions": ",".join(aliases),
    }


# -- tempest.conf --------------------------------------------------------------


def tempest_conf(auth_url: str, site: Site, found: dict[str, str], log_dir: Path) -> str:
    """A tempest.conf for the lab: Keystone, Glance, Nova (fake driver, one
    compute node), Neutron's API with ML2 and no agents (no L3, no DHCP, no
    public network); no Cinder, Swift, Heat, ..."""
    region = site.region
    l3 = "router" in found["network_extensions"].split(",")
    return f"""\
[DEFAULT]
log_dir = {log_dir}
log_file = tempest.log
debug = true

[auth]
use_dynamic_credentials = true
create_isolated_networks = false
admin_username = {site.username}
admin_password = {site.password}
admin_project_name = {site.project}
admin_domain_name = {site.domain}

[identity]
uri_v3 = {auth_url}
auth_version = v3
region = {region}
v3_endpoint_type = public
default_domain_id = default

[identity-feature-enabled]
security_compliance = false
application_credentials = true
access_rules = true
project_tags = true

[image]
region = {region}
endpoint_type = public

[image-feature-enabled]
import_image = false
os_glance_reserved = false

[compute]
region = {region}
endpoint_type = public
image_ref = {found["image"]}
image_ref_alt = {found["image_alt"]}
flavor_ref = {found["flavor"]}
flavor_ref_alt = {found["flavor_alt"]}
fixed_network_name =
min_compute_nodes = 1
build_timeout = 120
compute_volume_common_az =

[compute-feature-enabled]
live_migration = false
cold_migration = false
vnc_console = false
spice_console = false
serial_console = false
attach_encrypted_volume = false
volume_multiattach = false
swap_volume = false
volume_backed_live_migration = false
block_migration_for_live_migration = false
resize = {"true" if found["flavor_alt"] != found["flavor"] else "false"}
metadata_service = false
config_drive = false
unified_limits = false

[network]
region = {region}
endpoint_type = public
public_network_id =
floating_network_name =
project_networks_reachable = false
shared_physical_network = false

[network-feature-enabled]
floating_ips = {"true" if l3 else "false"}
ipv6 = true
api_extensions = {found["network_extensions"]}
port_security = {"true" if "port-security" in found["network_extensions"] else "false"}

[validation]
run_validation = false

[service_available]
cinder = false
swift = false
neutron = true
glance = true
nova = true
heat = false
horizon = false
placement = true

[volume-feature-enabled]
backup = false
"""


# -- running -----------------------------------------------------------------


def ensure_tempest(venv: Path) -> Path:
    tempest = venv / "bin" / "tempest"
    if tempest.exists():
        return tempest
    print(f"installing Tempest into {venv} (PyPI, with deploy/lab/constraints.txt)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "-c",
            str(ROOT / "deploy" / "lab" / "constraints.txt"),
            "tempest",
        ],
        check=True,
    )
    return tempest


@dataclass
class Run:
    name: str
    auth_url: str
    workdir: Path
    seconds: float = 0.0
    rc: int = 0


def prepare(run: Run, site: Site, found: dict[str, str]) -> None:
    if run.workdir.exists():
        shutil.rmtree(run.workdir)
    (run.workdir / "etc").mkdir(parents=True)
    (run.workdir / "logs").mkdir()
    conf = tempest_conf(run.auth_url, site, found, run.workdir / "logs")
    (run.workdir / "etc" / "tempest.conf").write_text(conf)


def execute(run: Run, tempest: Path, regex: str, concurrency: int) -> None:
    cmd = [
        str(tempest),
        "run",
        "--config-file",
        str(run.workdir / "etc" / "tempest.conf"),
        "--regex",
        regex,
        "--concurrency",
        str(concurrency),
    ]
    print(f"[{run.name}] {' '.join(cmd)}  (cwd {run.workdir}, auth_url {run.auth_url})")
    started = time.monotonic()
    with (run.workdir / "run.out").open("w") as out:
        proc = subprocess.run(
            cmd, cwd=run.workdir, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    run.seconds = time.monotonic() - started
    run.rc = proc.returncode
    (run.workdir / "seconds").write_text(f"{run.seconds:.0f}\n")
    print(f"[{run.name}] done in {run.seconds / 60:.1f} min (exit {run.rc})")


_LINE = re.compile(r"^\{\d+\} (.+?)(?: \[[0-9.]+s\])? \.\.\. (ok|FAILED|SKIPPED)")
_FROM_CONSOLE = {"ok": "success", "FAILED": "fail", "SKIPPED": "skip"}


def console_outcomes(run_out: Path) -> dict[str, str]:
    """The outcomes a run printed so far (``run.out``): for a run that was
    stopped before stestr stored its results."""
    result: dict[str, str] = {}
    for line in run_out.read_text(errors="replace").splitlines():
        m = _LINE.match(line.strip())
        if m:
            result[re.sub(r"\[[^\]]*\]$", "", m.group(1).strip())] = _FROM_CONSOLE[m.group(2)]
    return result


def outcomes(run: Run, venv: Path) -> dict[str, str]:
    """test id (without its [attributes]) -> success, fail, skip, ..."""
    stestr = venv / "bin" / "stestr"
    sub = subprocess.run(
        [str(stestr), "last", "--subunit"], cwd=run.workdir, capture_output=True, check=False
    )
    if sub.returncode != 0 or not sub.stdout:
        print(f"[{run.name}] no stored results; read from {run.workdir / 'run.out'}")
        return console_outcomes(run.workdir / "run.out")
    (run.workdir / "results.subunit").write_bytes(sub.stdout)
    table = subprocess.run(
        [str(venv / "bin" / "subunit2csv")],
        input=sub.stdout,
        capture_output=True,
        check=False,  # it exits 1 when a test failed
    )
    result: dict[str, str] = {}
    for row in csv.DictReader(io.StringIO(table.stdout.decode())):
        test = row["test"].split("[", 1)[0]
        result[test] = row["status"]
    return result


def kind(status: str | None) -> str:
    if status is None:
        return "absent"
    if status in OK:
        return "pass"
    if status in SKIP:
        return "skip"
    return "fail"


def compare(runs: list[Run], results: list[dict[str, str]]) -> int:
    names = [r.name for r in runs]
    print()
    print(f"{'run':<10} {'pass':>6} {'fail':>6} {'skip':>6} {'total':>6} {'minutes':>8}")
    for run, res in zip(runs, results, strict=True):
        counts = {k: 0 for k in ("pass", "fail", "skip")}
        for status in res.values():
            counts[kind(status)] += 1
        minutes = f"{run.seconds / 60:.1f}" if run.seconds else "-"
        print(
            f"{run.name:<10} {counts['pass']:>6} {counts['fail']:>6} {counts['skip']:>6} "
            f"{len(res):>6} {minutes:>8}"
        )
    tests = sorted(set().union(*results))
    differing = [t for t in tests if len({kind(res.get(t)) for res in results}) > 1]
    print()
    if not differing:
        print("no test's outcome differs")
        return 0
    print(f"{len(differing)} test(s) whose outcome differs ({' / '.join(names)}):")
    for test in differing:
        print(f"  {' / '.join(kind(res.get(test)) for res in results):<22} {test}")
    worse = [t for t in differing if kind(results[0].get(t)) == "pass" != kind(results[1].get(t))]
    print(f"\npass {names[0]}, not {names[1]}: {len(worse)}")
    return 1 if worse else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lab", type=Path, default=ROOT / "lab", help="the lab's directory")
    ap.add_argument("--venv", type=Path, help="Tempest's venv (default: LAB/tempest-venv)")
    ap.add_argument("--workdir", type=Path, help="run directories (default: LAB/tempest)")
    ap.add_argument("--site", default="Denver", help="the target site (its region)")
    ap.add_argument(
        "--straight",
        default="http://127.0.0.1:18100/identity/v3",
        help="run (a)'s auth URL: the target's own entry",
    )
    ap.add_argument("--gateway", default="http://127.0.0.1:18000", help="run (b): Berlin's gateway")
    ap.add_argument("--scope", default="<*: Denver>", help="run (b)'s scope, in the URL")
    ap.add_argument("--regex", default=DEFAULT_REGEX)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--image", default="cirros-denver")
    ap.add_argument("--flavor", default="m1.tiny")
    ap.add_argument("--only", choices=("straight", "through"), help="one run, no comparison")
    ap.add_argument(
        "--sequential", action="store_true", help="one run after the other (default: both at once)"
    )
    ap.add_argument(
        "--compare-only", action="store_true", help="compare the runs already in WORKDIR"
    )
    args = ap.parse_args(argv)

    lab: Path = args.lab.resolve()
    venv: Path = (args.venv or lab / "tempest-venv").resolve()
    workdir: Path = (args.workdir or lab / "tempest").resolve()
    runs = [
        Run("straight", args.straight, workdir / "straight"),
        Run("through", scope_url(args.gateway, args.scope), workdir / "through"),
    ]
    if args.compare_only:
        for run in runs:
            seconds = run.workdir / "seconds"
            run.seconds = float(seconds.read_text()) if seconds.exists() else 0.0
        return compare(runs, [outcomes(r, venv) for r in runs])
    if args.only:
        runs = [r for r in runs if r.name == args.only]

    tempest = ensure_tempest(venv)
    site = Site(args.straight, args.site)
    found = discover(site, args.image, args.flavor)
    print(f"{args.site}: {json.dumps(found)}")
    for run in runs:
        prepare(run, site, found)
    env_note = os.environ.get("OS_CLOUD")
    if env_note:
        print(f"note: OS_CLOUD={env_note} is ignored: Tempest reads only tempest.conf")
    if args.sequential or len(runs) == 1:
        for run in runs:
            execute(run, tempest, args.regex, args.concurrency)
    else:
        threads = [
            threading.Thread(target=execute, args=(r, tempest, args.regex, args.concurrency))
            for r in runs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    results = [outcomes(r, venv) for r in runs]
    if len(runs) == 1:
        return _single(runs[0], results[0])
    return compare(runs, results)


def _single(run: Run, res: dict[str, str]) -> int:
    counts = {k: 0 for k in ("pass", "fail", "skip")}
    for status in res.values():
        counts[kind(status)] += 1
    print(f"{run.name}: {counts} of {len(res)} in {run.seconds / 60:.1f} min")
    for test, status in sorted(res.items()):
        if kind(status) == "fail":
            print(f"  fail {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
