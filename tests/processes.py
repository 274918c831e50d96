"""``scoped gateway`` run as a process, as deployed: for the tests that
need the real command (TLS, workers, proxies in front)."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.federation import free_port


@dataclasses.dataclass(frozen=True)
class Running:
    """A ``scoped gateway`` process started by :func:`gateway_command`."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def gateway_command(
    tmp_path: Path,
    config: dict[str, Any],
    verify: ssl.SSLContext | bool = True,
    args: tuple[str, ...] = (),
) -> Iterator[Running]:
    """``scoped gateway`` itself (uvicorn with uvloop, as deployed) on
    ``config`` (and more ``args``), once its ``/healthz`` answers; its
    stderr in ``tmp_path/gateway.log``. Stopped (by its PID) at the end."""
    path = tmp_path / "scoped.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    scheme = (
        "https" if "cert" in config.get("tls", {}) and config["tls"].get("serve", True) else "http"
    )
    code = "import sys; from scoped_cli.main import main; sys.exit(main(sys.argv[1:]))"
    argv = ["gateway", "--config", str(path), "--listen", f"127.0.0.1:{port}", *args]
    log = tmp_path / "gateway.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *argv], stdout=subprocess.DEVNULL, stderr=err
        )
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                health = httpx.get(f"{url}/healthz", verify=verify, timeout=2)
                break
            except httpx.ConnectError:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.05)
        assert health.status_code == 200
        yield Running(url, port, proc, log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def running(argv: list[str], port: int) -> Iterator[None]:
    """A server of a test's own (``argv``), once it listens on ``port`` of
    127.0.0.1; stopped by its PID at the end."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, f"{argv[0]} did not listen"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()  # ours, by its PID
        proc.wait(15)
        if proc.stderr is not None:
            proc.stderr.close()
