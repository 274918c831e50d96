"""A memcached of a test's own (Debian's binary, on loopback): the marker
store's real backend (scoped/markers.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.debian import require_binary
from tests.federation import free_port
from tests.processes import running

MEMCACHED = "/usr/bin/memcached"


@contextlib.contextmanager
def memcached() -> Iterator[str]:
    """A memcached of our own on loopback (its PID ours to stop): HOST:PORT."""
    binary = require_binary(MEMCACHED, "memcached", "the marker store is tested on memcached")
    port = free_port()
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16", "-u", "nobody"]
    with running(argv, port):
        yield f"127.0.0.1:{port}"
