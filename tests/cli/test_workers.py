"""``scoped gateway --workers N``: several processes on one listen address,
each a whole gateway, one ``/metrics`` for all of them (scoped/workers.py).
The real command, on loopback, in front of a stand-in site."""

from __future__ import annotations

import concurrent.futures
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scoped.workers import WORKERS_ENV
from tests.federation import free_port
from tests.processes import gateway_command
from tests.standin import SiteData, make_items, serve_sites_in_thread

CODE = "import sys; from scoped_cli.main import main; sys.exit(main(sys.argv[1:]))"


def children(pid: int) -> list[int]:
    """The worker processes of gateway ``pid`` (not multiprocessing's
    resource tracker)."""
    found = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [p for p in found if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().partition("=")[::2] for e in raw if b"=" in e)


@contextlib.contextmanager
def gateway(tmp_path: Path, workers: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``scoped gateway --workers N`` in front of a stand-in Berlin, once
    every worker is up."""
    site = SiteData("Berlin", servers=make_items("vm", 3, seed="Berlin"))
    with serve_sites_in_thread([site]) as urls:
        config = {
            "site": "Berlin",
            "sites": {"Berlin": {}},
            "backends": {"compute": urls["Berlin"]},
        }
        with gateway_command(tmp_path, config, args=("--workers", str(workers))) as gw:
            deadline = time.monotonic() + 30
            while workers > 1 and len(children(gw.proc.pid)) < workers:
                assert time.monotonic() < deadline, "the workers did not come up"
                time.sleep(0.1)
            yield gw.url, gw.proc


def served(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    if "scoped_requests" not in fams:
        return 0.0
    return sum(s.value for s in fams["scoped_requests"].samples if s.name.endswith("_total"))


def test_every_worker_serves_and_metrics_count_them_all(tmp_path: Path) -> None:
    with gateway(tmp_path, 2) as (url, proc):
        workers = children(proc.pid)
        assert len(workers) == 2
        folder = Path(environ(workers[0])[WORKERS_ENV])
        headers = {"X-Scope": "<compute: Berlin>", "Connection": "close"}

        def one(_: int) -> int:
            return httpx.get(f"{url}/compute/v2.1/servers", headers=headers, timeout=10).status_code

        sent = 0
        per_worker: dict[str, float] = {}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for _ in range(20):  # until both workers have served some (bounded)
                assert set(pool.map(one, range(50))) == {200}
                sent += 50
                time.sleep(1.2)  # a snapshot a second
                per_worker = {
                    p.name: sum(
                        s[2]
                        for f in orjson.loads(p.read_bytes())
                        if f["name"] == "scoped_requests"
                        for s in f["samples"]
                        if s[0].endswith("_total")
                    )
                    for p in folder.glob("metrics-*.json")
                }
                if len(per_worker) == 2 and all(per_worker.values()):
                    break
        assert sorted(per_worker) == sorted(f"metrics-{w}.json" for w in workers)
        assert all(per_worker.values()), per_worker
        # Whichever worker a scrape reaches, it counts every request.
        for _ in range(6):
            assert served(url) == sent
    assert not folder.exists()  # removed when the gateway stopped


def test_one_worker_is_one_process_with_nothing_shared(tmp_path: Path) -> None:
    with gateway(tmp_path, 1) as (url, proc):
        assert children(proc.pid) == []
        assert WORKERS_ENV not in environ(proc.pid)
        headers = {"X-Scope": "<compute: Berlin>"}
        assert httpx.get(f"{url}/compute/v2.1/servers", headers=headers).status_code == 200
        assert served(url) == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--workers", "0"], "expected 1 to 256 processes, got '0'"),
        (["--workers", "two"], "expected 1 to 256 processes, got 'two'"),
        (
            ["--workers", "2", "--server", "aiohttp"],
            "several workers are run with --server uvicorn",
        ),
    ],
)
def test_a_bad_number_of_workers_is_refused_saying_why(
    tmp_path: Path, args: list[str], says: str
) -> None:
    path = tmp_path / "scoped.yaml"
    path.write_text(yaml.safe_dump({"site": "B", "sites": {"B": {}}}))
    argv = ["gateway", "--config", str(path), "--listen", f"127.0.0.1:{free_port()}", *args]
    run = subprocess.run(
        [sys.executable, "-c", CODE, *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode != 0
    assert says in run.stderr
    assert "Traceback" not in run.stderr
