"""Bodies of any size pass through in constant memory (docs/design.md §6).

Two real ``scoped gateway`` processes (Berlin forwards to Denver) in front of
a stand-in glance; a 300 MiB image goes up and comes back down through both.
The gateways' peak RSS growth (VmHWM) is printed and bounded.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.federation import free_port
from tests.standin import PATTERN, SiteData, make_items, pattern_sha256, serve_sites_in_thread

SIZE = 300 * 1024 * 1024
MAX_GROWTH = 64 * 1024 * 1024
SCOPED = shutil.which("scoped", path=str(Path(sys.executable).parent))


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, int], SiteData]]:
    assert SCOPED is not None, "the scoped console script is not installed"
    tmp = tmp_path_factory.mktemp("stream")
    berlin, denver = SiteData("Berlin"), SiteData("Denver")
    ports = {"Berlin": free_port(), "Denver": free_port()}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with serve_sites_in_thread([berlin, denver]) as urls:
        try:
            for name, port in ports.items():
                endpoints = "\n".join(
                    f"  {n}: {{endpoints: {{image: 'http://127.0.0.1:{p}/image'}}}}"
                    for n, p in ports.items()
                )
                cfg = tmp / f"{name}.yaml"
                cfg.write_text(
                    f"site: {name}\nsites:\n{endpoints}\nbackends: {{image: '{urls[name]}'}}\n"
                )
                procs[name] = subprocess.Popen(
                    [
                        SCOPED,
                        "gateway",
                        "--config",
                        str(cfg),
                        "--listen",
                        f"127.0.0.1:{port}",
                    ]
                )
            for port in ports.values():
                deadline = time.monotonic() + 20
                while True:
                    try:
                        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                        break
                    except httpx.HTTPError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
            yield (
                f"http://127.0.0.1:{ports['Berlin']}",
                {n: p.pid for n, p in procs.items()},
                denver,
            )
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                proc.wait(timeout=15)


def _pattern_stream(size: int) -> Iterator[bytes]:
    left = size
    while left:
        chunk = PATTERN[: min(left, len(PATTERN))]
        left -= len(chunk)
        yield chunk


def test_300_mib_up_and_down_in_constant_memory(
    pair: tuple[str, dict[str, int], SiteData],
) -> None:
    base, pids, denver = pair
    image = make_items("big", 1, seed="D")[0]
    denver.images.append(image)
    scope = {"X-Scope": "<glance: Denver>"}
    before = {n: peak_rss(pid) for n, pid in pids.items()}
    with httpx.Client(timeout=120) as client:
        up = client.put(
            f"{base}/image/v2/images/{image['id']}/file",
            content=_pattern_stream(SIZE),
            headers={**scope, "Content-Type": "application/octet-stream"},
        )
        assert up.status_code == 204, up.text
        (record,) = denver.uploads
        assert record.size == SIZE
        assert record.sha256 == pattern_sha256(SIZE)

        digest = hashlib.sha256()
        got = 0
        url = f"{base}/image/v2/images/{image['id']}/file?size={SIZE}"
        with client.stream("GET", url, headers=scope) as down:
            assert down.status_code == 200
            assert down.headers["x-scope-sites"].startswith("Denver=200;t=")
            for chunk in down.iter_raw():
                digest.update(chunk)
                got += len(chunk)
    assert got == SIZE
    assert digest.hexdigest() == pattern_sha256(SIZE)
    for name, pid in pids.items():
        growth = peak_rss(pid) - before[name]
        print(f"{name} gateway peak RSS growth for 300 MiB up + down: {growth / 2**20:.1f} MiB")
        assert growth < MAX_GROWTH


def test_a_client_gone_mid_upload_leaves_both_gateways_serving(
    pair: tuple[str, dict[str, int], SiteData],
) -> None:
    """A client that sends part of a streamed body and closes: the upstream
    call ends with it (the site never records an upload), and the gateways
    keep serving."""
    import socket  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    base, pids, denver = pair
    image = make_items("cut", 1, seed="C")[0]
    denver.images.append(image)
    parts = urlsplit(base)
    head = (
        f"PUT /image/v2/images/{image['id']}/file HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "X-Scope: <glance: Denver>\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {64 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode() + PATTERN * (1024 * 1024 // len(PATTERN)))
        time.sleep(0.3)  # the gateways are streaming it to Denver's glance
    with httpx.Client(timeout=30) as client:
        for _ in range(50):  # bounded: the cut reaches Denver within a few seconds
            if not any(r.image_id == image["id"] for r in denver.uploads):
                break
            time.sleep(0.1)
        listed = client.get(f"{base}/image/v2/images", headers={"X-Scope": "<glance: Denver>"})
    assert listed.status_code == 200
    assert not any(r.image_id == image["id"] for r in denver.uploads), "no upload was recorded"
    for pid in pids.values():
        assert Path(f"/proc/{pid}").exists(), "a gateway died"
