"""The lab's WAN: a user-space link emulator for every cross-site TCP path.

Edge sites sit 10-300 ms apart on links that break; the lab's sites all sit
on 127.0.0.1. One process per lab (``python -m scoped_cli.links daemon
--dir LAB_DIR``, started by ``deploy/lab/lab up``) listens on one port per
cross-site path named in ``$LAB_DIR/links/forwards`` and forwards it to the
real port, holding each chunk for the link's one-way delay. Every site's
scoped config reaches the other sites through these ports; a site reaches
itself directly.

Why our own. What was checked on the lab's machine kind (Debian 12, root,
kernel 6.18): the kernel has no netem (``CONFIG_NET_SCH_NETEM`` is not set;
``tc qdisc add dev lo root netem delay 10ms``, even in a fresh network
namespace, says "Specified qdisc kind is unknown"), so the kernel cannot
delay packets; it has tbf/htb (a rate cap) and nf_tables/iptables (the
``iptables``/``nft`` tools are not installed; Debian has them), which could
drop SYNs for a partition, but only with root and rules on the loopback
every lab process shares, and still without delay. Toxiproxy is in neither
Debian's apt nor PyPI as a server (PyPI has only its clients:
toxiproxy-python, chaostoolkit-toxiproxy). Network namespaces exist, but
without netem they add no delay either. A TCP proxy in user space needs
none of that, runs as the lab's user, and what scoped sees of a WAN is what
TCP shows it: delay, bandwidth, refused or silent connections, resets,
stalls.

Per link (an unordered pair of sites, :class:`scoped_cli.wan.Link`): a
one-way delay per direction, a jitter (each chunk's delay is
``delay * (1 +- jitter)``, uniformly; chunks still arrive in order: a chunk is
delivered at ``max(previous delivery, arrival + its delay)``), an optional
bandwidth per direction (a token bucket shared by every connection of that
direction, 16 KiB of burst), and a state: up, or cut in one of two modes:

``refuse``
    the listeners close (a new connection gets ECONNREFUSED) and open
    connections are reset (RST, SO_LINGER 0) at both ends.
``blackhole``
    a real partition: each listener is replaced by a socket listening with a
    backlog of 0 whose one accept-queue slot is taken by a connection of our
    own that is never accepted; Linux then drops every further SYN, so a
    client's connect times out (tests/cli/test_links.py checks this on the
    running kernel). Open connections stall: bytes are held, nothing is
    delivered either way, and reading stops once a connection holds its
    quota; when the link heals everything held is delivered, in order.

The emulation's limits (deploy/lab/README.md, "The WAN"): the TCP handshake
with the proxy is local and immediate, so it is emulated: the first bytes
of a new connection go out no sooner than one round trip after it was
accepted; a path whose far end is down (the site stopped, the link up) is
accepted, then reset one round trip later, where a real WAN would refuse
it; there is no loss, no reordering and no MTU; each connection holds at
most a few MiB in flight (its window), which caps one connection's rate at
about that much per round trip.

Control: JSON lines on the Unix socket ``$LAB_DIR/run/links.sock``
(``status``, ``set``, ``cut``, ``heal``, ``reload``); every change is
written to ``$LAB_DIR/links/state.json``, which a restart reads back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import struct
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from .wan import (
    DEFAULT_MODE,
    DEFAULT_WAN_NAME,
    MODES,
    Forward,
    LabFiles,
    Link,
    WanError,
    bandwidth_value,
    check_site,
    delay_value,
    jitter_value,
    load_forwards,
    load_state,
    load_wan,
    plan_links,
    save_state,
    site_order,
)

log = logging.getLogger("scoped.links")

WINDOW = 4 * 1024 * 1024
"""Most bytes one direction of one connection holds before it stops reading
(its window): bounds memory, and caps one connection at WINDOW per round trip."""
MIN_WINDOW = 64 * 1024
BURST = 16 * 1024
"""Bytes a capped direction may send at once after being idle."""
SLACK = 0.001
"""Chunks due within this many seconds go out together (fewer wake-ups)."""
BACKLOG = 128
EOF = b""
RESET = None


class LinksNotRunning(WanError):
    """No link emulator answers on the lab's control socket."""


# ---- one direction of a link ----------------------------------------------------


class Direction:
    """One direction of a link: its delay, jitter and bandwidth (a token bucket
    shared by every connection going that way)."""

    __slots__ = ("delay", "jitter", "rate", "stamp", "tokens", "window")

    def __init__(self) -> None:
        self.delay = 0.0
        self.jitter = 0.0
        self.rate: float | None = None
        self.tokens = float(BURST)
        self.stamp = 0.0
        self.window = WINDOW

    def configure(self, delay_ms: float, jitter: float, mbit: float | None) -> None:
        self.delay = delay_ms / 1000
        self.jitter = jitter
        self.rate = None if mbit is None else mbit * 1e6 / 8
        # With a cap, a connection holds about a quarter second of the link.
        self.window = WINDOW
        if self.rate is not None:
            self.window = int(min(WINDOW, max(MIN_WINDOW, self.rate / 4)))

    def sample(self) -> float:
        """One chunk's one-way delay, in seconds."""
        if self.delay and self.jitter:
            return self.delay * (1 + random.uniform(-self.jitter, self.jitter))
        return self.delay

    def departure(self, size: int, now: float) -> float:
        """When a chunk of ``size`` bytes arriving ``now`` has gone through the bucket."""
        if self.rate is None:
            return now
        self.tokens = min(float(BURST), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= size
        return now if self.tokens >= 0 else now - self.tokens / self.rate


# ---- one connection ---------------------------------------------------------------


class Side(asyncio.Protocol):
    """One end of a proxied connection: the accepted client, or the real service."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.gone = False
        self.outgoing: Pipe  # what this side sends
        self.incoming: Pipe  # what this side receives

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.conn.made(self)

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.outgoing.push(EOF)
        return True  # half-closed: the other way keeps flowing

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.conn.lost(self, exc)

    def pause_writing(self) -> None:
        self.incoming.blocked = True

    def resume_writing(self) -> None:
        self.incoming.blocked = False
        self.incoming.flush()

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0), dropping what is unsent."""
        if self.transport is None or self.gone:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.gone:
            self.transport.close()


class Pipe:
    """One direction of one connection: what ``src`` sends, delivered to ``dst``
    after the link's delay, in order."""

    __slots__ = (
        "blocked",
        "conn",
        "direction",
        "done",
        "dst",
        "last",
        "loop",
        "paused",
        "queue",
        "queued",
        "src",
        "timer",
    )

    def __init__(self, conn: Conn, direction: Direction, src: Side, dst: Side, first: float):
        self.conn = conn
        self.loop = conn.loop
        self.direction = direction
        self.src = src
        self.dst = dst
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.queued = 0
        self.last = first  # delivery time of the previous chunk (order is kept)
        self.timer: asyncio.TimerHandle | None = None
        self.blocked = False  # dst's transport buffer is full
        self.paused = False  # src's reading is paused (this pipe holds its window)
        self.done = False  # EOF or reset delivered

    def push(self, item: bytes | None) -> None:
        """Queue a chunk (bytes), the end of the stream (EOF) or a reset."""
        if self.done or self.conn.closed:
            return
        now = self.loop.time()
        size = len(item) if item else 0
        start = self.direction.departure(size, now) if size else now
        due = max(self.last, start + self.direction.sample())
        self.last = due
        self.queue.append((due, item))
        self.queued += size
        if self.queued > self.direction.window and not self.paused and not self.src.gone:
            assert self.src.transport is not None
            self.src.transport.pause_reading()
            self.paused = True
        self.schedule()

    def schedule(self) -> None:
        if (
            self.timer is None
            and self.queue
            and not self.blocked
            and not self.conn.stalled
            and self.dst.transport is not None
        ):
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        dst = self.dst.transport
        if self.conn.closed or self.conn.stalled or dst is None:
            return
        limit = self.loop.time() + SLACK
        while self.queue and not self.blocked and self.queue[0][0] <= limit:
            _, item = self.queue.popleft()
            if item is RESET:
                self.done = True
                self.dst.reset()
                self.conn.finish()
                return
            if not item:
                self.done = True
                if dst.can_write_eof() and not self.dst.gone:
                    dst.write_eof()
                self.conn.check_finished()
                return
            self.queued -= len(item)
            if not self.dst.gone:
                dst.write(item)
        if self.paused and self.queued <= self.direction.window // 4 and not self.src.gone:
            assert self.src.transport is not None
            self.src.transport.resume_reading()
            self.paused = False
        self.schedule()

    def stall(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def heal(self, now: float) -> None:
        """The link is back: what was held goes out one delay from now, in order."""
        if self.queue:
            base = now + self.direction.delay
            self.queue = deque((max(due, base), item) for due, item in self.queue)
            self.last = max(self.last, base)
        self.schedule()

    def cancel(self) -> None:
        self.stall()
        self.queue.clear()
        self.queued = 0


class Conn:
    """One proxied connection: the client's side, the service's side, a pipe each way."""

    def __init__(self, listener: Listener) -> None:
        self.loop = asyncio.get_running_loop()
        self.listener = listener
        self.link = listener.link
        forward, back = self.link.directions(listener.forward.src)
        self.client = Side(self)
        self.server = Side(self)
        self.born = self.loop.time()
        # The handshake with us was local: a real one takes a round trip
        # before the client's first byte can leave.
        self.handshake = forward.delay + back.delay
        self.up = Pipe(self, forward, self.client, self.server, self.born + self.handshake)
        self.down = Pipe(self, back, self.server, self.client, self.born)
        self.client.outgoing = self.server.incoming = self.up
        self.server.outgoing = self.client.incoming = self.down
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    @property
    def stalled(self) -> bool:
        return self.link.state.cut == "blackhole"

    def made(self, side: Side) -> None:
        if side is self.client:
            self.link.conns.add(self)
            self.task = self.loop.create_task(self.connect())
        else:
            self.up.schedule()

    async def connect(self) -> None:
        target = self.listener.forward.target
        try:
            await self.loop.create_connection(lambda: self.server, "127.0.0.1", target)
        except OSError:
            # Nothing listens there (the site is down): the client learns it
            # one round trip after it connected, as a reset.
            self.up.cancel()
            self.loop.call_at(self.born + self.handshake, self.refuse)

    def refuse(self) -> None:
        if not self.closed:
            self.client.reset()
            self.finish()

    def lost(self, side: Side, exc: Exception | None) -> None:
        if self.closed:
            return
        side.incoming.cancel()
        if exc is not None:  # a reset, or an error: the other side gets an RST
            side.outgoing.push(RESET)
        elif not side.outgoing.done:  # closed without an EOF first
            side.outgoing.push(EOF)
        side.incoming.done = True
        self.check_finished()

    def check_finished(self) -> None:
        if self.up.done and self.down.done:
            self.client.close()
            self.server.close()
            self.finish()

    def reset(self) -> None:
        """Both ends get an RST now (a link cut in ``refuse`` mode)."""
        self.client.reset()
        self.server.reset()
        self.finish()

    def finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.up.cancel()
        self.down.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.client.close()
        self.server.close()
        self.link.conns.discard(self)


# ---- links and their listeners ------------------------------------------------------


class LinkRuntime:
    """A link in the running emulator: its state, both directions, its connections."""

    def __init__(self, state: Link) -> None:
        self.state = state
        self.ab = Direction()
        self.ba = Direction()
        self.conns: set[Conn] = set()
        self.listeners: list[Listener] = []
        self.configure(state)

    def configure(self, state: Link) -> None:
        self.state = state
        self.ab.configure(state.delay[0], state.jitter, state.bandwidth[0])
        self.ba.configure(state.delay[1], state.jitter, state.bandwidth[1])

    def directions(self, src: str) -> tuple[Direction, Direction]:
        """(src -> the other site, the other site -> src)."""
        return (self.ab, self.ba) if src == self.state.a else (self.ba, self.ab)


def _listening(port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _abort(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Listener:
    """The port one site uses to reach one port of another site."""

    def __init__(self, forward: Forward, link: LinkRuntime) -> None:
        self.forward = forward
        self.link = link
        self.server: asyncio.Server | None = None
        self.hole: tuple[socket.socket, socket.socket] | None = None

    def name(self) -> str:
        f = self.forward
        return f"127.0.0.1:{f.listen} ({f.src} -> {f.dst} {f.what} :{f.target})"

    async def apply(self) -> None:
        """Listen, black-hole or refuse, as the link's state says."""
        cut = self.link.state.cut
        if cut is None:
            await self.open()
        elif cut == "blackhole":
            self.blackhole()
        else:
            self.close()

    async def open(self) -> None:
        self._fill_in()
        if self.server is not None:
            return
        try:
            sock = _listening(self.forward.listen, BACKLOG)
        except OSError as err:
            raise WanError(f"cannot listen on {self.name()}: {err.strerror or err}") from None
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Conn(self).client, sock=sock)

    def blackhole(self) -> None:
        """A listening socket whose accept queue (backlog 0: one slot) is full:
        the kernel drops every SYN, and a client's connect times out."""
        if self.hole is not None:
            return
        self.close()
        try:
            sock = _listening(self.forward.listen, 0)
        except OSError as err:
            raise WanError(f"cannot black-hole {self.name()}: {err.strerror or err}") from None
        try:
            filler = socket.create_connection(("127.0.0.1", self.forward.listen), timeout=2)
        except OSError as err:
            sock.close()
            raise WanError(f"cannot fill the accept queue of {self.name()}: {err}") from None
        self.hole = (sock, filler)

    def _fill_in(self) -> None:
        if self.hole is not None:
            sock, filler = self.hole
            self.hole = None
            _abort(filler)
            sock.close()

    def close(self) -> None:
        self._fill_in()
        if self.server is not None:
            self.server.close()  # the listening socket only: connections stay
            self.server = None


# ---- the emulator --------------------------------------------------------------------


class Emulator:
    """Every link and listener of one lab."""

    def __init__(self, files: LabFiles) -> None:
        self.files = files
        self.sites: list[str] = []
        self.links: dict[frozenset[str], LinkRuntime] = {}
        self.listeners: dict[int, Listener] = {}

    def link(self, a: Any, b: Any) -> LinkRuntime:
        where = "link"
        a = check_site(a, self.sites, where)
        b = check_site(b, self.sites, where)
        if a == b:
            raise WanError(f"a link joins two different sites; got {a!r} twice")
        return self.links[frozenset((a, b))]

    async def load(self, reset: bool = False) -> None:
        """(Re)read the forwards and the WAN; keep the links' current state unless ``reset``."""
        forwards = load_forwards(self.files)
        sites = site_order(forwards)
        wan = self.files.current_wan(sites)
        current = {key: rt.state for key, rt in self.links.items()}
        saved = current or load_state(self.files)
        planned = plan_links(sites, wan, saved, reset)
        self.sites = sites
        wanted = {frozenset((p.a, p.b)): p for p in planned}
        for key in [k for k in self.links if k not in wanted]:
            await self._drop(self.links.pop(key))
        for key, state in wanted.items():
            rt = self.links.get(key)
            if rt is None:
                self.links[key] = LinkRuntime(state)
            else:
                await self.change(rt, state, save=False)
        ports = {f.listen: f for f in forwards}
        for port in [p for p in self.listeners if ports.get(p) != self.listeners[p].forward]:
            old = self.listeners.pop(port)
            old.close()
            old.link.listeners.remove(old)
        for port, fwd in ports.items():
            if port in self.listeners:
                continue
            rt = self.links[frozenset((fwd.src, fwd.dst))]
            listener = Listener(fwd, rt)
            rt.listeners.append(listener)
            self.listeners[port] = listener
            await listener.apply()
        self.save()
        log.info(
            "links: %d listeners for %d links between %s%s",
            len(self.listeners),
            len(self.links),
            ", ".join(sites),
            " (WAN reset)" if reset else "",
        )

    async def _drop(self, rt: LinkRuntime) -> None:
        for listener in rt.listeners:
            listener.close()
            self.listeners.pop(listener.forward.listen, None)
        for conn in list(rt.conns):
            conn.reset()

    async def change(self, rt: LinkRuntime, state: Link, save: bool = True) -> None:
        """Apply a link's new state: delays at once, a cut or heal to listeners and connections."""
        before = rt.state.cut
        rt.configure(state)
        if state.cut == "refuse":
            for conn in list(rt.conns):
                conn.reset()
        elif before == "blackhole" and state.cut is None:
            now = asyncio.get_running_loop().time()
            for conn in list(rt.conns):
                conn.up.heal(now)
                conn.down.heal(now)
        elif state.cut == "blackhole":
            for conn in list(rt.conns):
                conn.up.stall()
                conn.down.stall()
        for listener in rt.listeners:
            await listener.apply()
        if save:
            self.save()
        if before != state.cut or save:
            log.info("link %s", state.describe())

    def save(self) -> None:
        save_state(self.files, [rt.state for rt in self.links.values()])

    def status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "links": [rt.state.to_json() for rt in self.links.values()],
            "listeners": len(self.listeners),
            "connections": sum(len(rt.conns) for rt in self.links.values()),
        }

    async def command(self, msg: Any) -> dict[str, Any]:
        if not isinstance(msg, dict):
            raise WanError("expected a JSON object with 'cmd'")
        cmd = msg.get("cmd")
        if cmd == "status":
            return self.status()
        if cmd == "reload":
            await self.load(reset=bool(msg.get("reset")))
            return self.status()
        if cmd not in ("set", "cut", "heal"):
            raise WanError(f"unknown command {cmd!r} (status, set, cut, heal, reload)")
        rt = self.link(msg.get("a"), msg.get("b"))
        state = rt.state
        flip = msg["a"] != state.a
        if cmd == "cut":
            mode = msg.get("mode", DEFAULT_MODE)
            if mode not in MODES:
                raise WanError(f"bad mode {mode!r}: expected {' or '.join(MODES)}")
            state = replace(state, cut=mode)
        elif cmd == "heal":
            state = replace(state, cut=None)
        else:
            state = _updated(state, msg, flip)
        await self.change(rt, state)
        return self.status()


def _updated(state: Link, msg: dict[str, Any], flip: bool) -> Link:
    """``state`` with what a ``set`` command gives ((a->b, b->a) as the command names them)."""

    def ordered(pair: Any, check: Any, what: str) -> tuple[Any, Any]:
        if not isinstance(pair, list) or len(pair) != 2:
            raise WanError(f"{what}: expected [a->b, b->a]")
        one, two = check(pair[0], what), check(pair[1], what)
        return (two, one) if flip else (one, two)

    if "delay" in msg:
        state = replace(state, delay=ordered(msg["delay"], delay_value, "--delay"))
    if "jitter" in msg:
        state = replace(state, jitter=jitter_value(msg["jitter"], "--jitter"))
    if "bandwidth" in msg:
        state = replace(state, bandwidth=ordered(msg["bandwidth"], bandwidth_value, "--bandwidth"))
    return state


# ---- the daemon ---------------------------------------------------------------------


async def _handle(
    emulator: Emulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
        try:
            answer = await emulator.command(json.loads(line))
        except WanError as err:
            answer = {"ok": False, "error": str(err)}
        except ValueError:
            answer = {"ok": False, "error": "expected one JSON object on one line"}
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()


async def serve(files: LabFiles, reset: bool = False) -> None:
    """Run the emulator of the lab in ``files`` until SIGTERM or SIGINT."""
    path = files.socket
    if path.exists():
        try:
            send(files, {"cmd": "status"}, timeout=2)
        except LinksNotRunning:
            path.unlink()  # left by a daemon that died
        else:
            raise WanError(f"a link emulator runs already for {files.dir} ({path})")
    emulator = Emulator(files)
    await emulator.load(reset)
    path.parent.mkdir(parents=True, exist_ok=True)
    server = await asyncio.start_unix_server(lambda r, w: _handle(emulator, r, w), path=str(path))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("links: control socket %s; pid %d", path, os.getpid())
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(OSError):
            path.unlink()
        for listener in emulator.listeners.values():
            listener.close()
        for rt in emulator.links.values():
            for conn in list(rt.conns):
                conn.finish()
        log.info("links: stopped")


# ---- the client side (scoped lab link, the lab script) --------------------------------


def send(files: LabFiles, msg: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
    """One command to the lab's emulator; its answer (``ok`` false: ``error`` says why)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(files.socket))
        except (FileNotFoundError, ConnectionRefusedError):
            raise LinksNotRunning(
                f"the link emulator of {files.dir} is not running (scoped lab up --dir {files.dir})"
            ) from None
        sock.sendall(json.dumps(msg).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    answer: dict[str, Any] = json.loads(data)
    return answer


def describe(links: Sequence[Link]) -> list[str]:
    return [link.describe() for link in links]


def show(files: LabFiles) -> list[str]:
    """``scoped lab status``'s links: live from the emulator, else as last saved."""
    try:
        answer = send(files, {"cmd": "status"}, timeout=5)
    except LinksNotRunning:
        saved = list(load_state(files).values())
        if not saved:
            return ["  (no link state yet: scoped lab up)"]
        return ["  NOT RUNNING; as last saved:", *("  " + line for line in describe(saved))]
    except (OSError, ValueError) as err:
        return [f"  NOT ANSWERING on {files.socket}: {err}"]
    links = [Link.from_json(item) for item in answer["links"]]
    return [
        *("  " + line for line in describe(links)),
        f"  ({answer['listeners']} listeners, {answer['connections']} open connections)",
    ]


def install_wan(files: LabFiles, source: str | Path) -> None:
    """Check a WAN file against the lab's sites and make it the lab's WAN
    (``default``: the built-in one, :data:`scoped_cli.wan.DEFAULT_WAN`)."""
    if str(source) == DEFAULT_WAN_NAME:
        files.wan.unlink(missing_ok=True)
        return
    sites = site_order(load_forwards(files))
    load_wan(source, sites)
    files.links.mkdir(parents=True, exist_ok=True)
    tmp = files.wan.with_name(".wan.yaml.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(files.wan)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m scoped_cli.links daemon|reload|wan|show|wait --dir LAB_DIR``: what
    deploy/lab/lab runs. Users run ``scoped lab link ...`` and ``scoped lab status``."""
    parser = argparse.ArgumentParser(prog="python -m scoped_cli.links")
    parser.add_argument("action", choices=("daemon", "reload", "wan", "show", "wait"))
    parser.add_argument("file", nargs="?", help="wan: the WAN file to install")
    parser.add_argument("--dir", required=True, help="the lab's state directory")
    parser.add_argument("--reset", action="store_true", help="every link from the WAN file")
    args = parser.parse_args(argv)
    files = LabFiles(Path(args.dir).resolve())
    try:
        if args.action == "daemon":
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr
            )
            asyncio.run(serve(files, args.reset))
        elif args.action == "reload":
            answer = send(files, {"cmd": "reload", "reset": args.reset}, timeout=30)
            if not answer.get("ok"):
                raise WanError(str(answer.get("error")))
        elif args.action == "wan":
            if not args.file:
                raise WanError("wan: name the WAN file")
            install_wan(files, args.file)
        elif args.action == "wait":
            return _wait(files)
        else:
            print("\n".join(show(files)))
    except WanError as err:
        print(f"links: {err}", file=sys.stderr)
        return 2
    return 0


def _wait(files: LabFiles, seconds: float = 15) -> int:
    """Until the emulator answers (after its start): 0, or 1 after ``seconds``."""
    import time  # noqa: PLC0415

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if send(files, {"cmd": "status"}, timeout=2).get("ok"):
                return 0
        except (LinksNotRunning, OSError, ValueError):
            pass
        time.sleep(0.1)
    return 1


if __name__ == "__main__":
    sys.exit(main())
