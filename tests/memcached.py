"""A memcached of a test's own (Debian's binary, on loopback): the marker
store's real backend (scoped/markers.py)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator

from tests.debian import require_binary
from tests.federation import free_port

MEMCACHED = "/usr/bin/memcached"


@contextlib.contextmanager
def memcached() -> Iterator[str]:
    """A memcached of our own on loopback (its PID ours to stop): HOST:PORT."""
    binary = require_binary(MEMCACHED, "memcached", "the marker store is tested on memcached")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16", "-u", "nobody"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "memcached did not listen"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
