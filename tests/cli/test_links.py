"""The lab's link emulator (scoped_cli.links) on loopback, with small servers
behind it; and the WAN file format (scoped_cli.wan). No OpenStack.

Timing checks are lower bounds only (a loaded machine makes things slower,
never faster); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scoped_cli.links import LinksNotRunning, install_wan, send, show
from scoped_cli.wan import (
    DEFAULT_WAN,
    LabFiles,
    Link,
    WanError,
    default_wan,
    load_state,
    parse_forwards,
    parse_wan,
    plan_links,
)

from tests.federation import free_port

DELAY_MS = 50.0


# ---- servers behind the links ------------------------------------------------------


class Server:
    """A threaded TCP server on 127.0.0.1 running ``handle`` per connection."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.handle = handle
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.handle(conn)

    def close(self) -> None:
        self.sock.close()


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def sink(conn: socket.socket) -> None:
    """Reads to the end, answers how many bytes came."""
    total = 0
    while data := conn.recv(1 << 20):
        total += len(data)
    conn.sendall(f"{total}\n".encode())


# ---- the emulator, as deploy/lab/lab runs it ------------------------------------------


@dataclass
class Emu:
    files: LabFiles
    echo_port: int  # A's way to B's echo server
    sink_port: int  # A's way to B's sink
    back_port: int  # B's way to A's echo server
    proc: subprocess.Popen[str] | None = None

    def cmd(self, **msg: Any) -> dict[str, Any]:
        answer = send(self.files, msg)
        assert answer.get("ok"), answer
        return answer

    def link(self) -> Link:
        return Link.from_json(self.cmd(cmd="status")["links"][0])

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scoped_cli.links", "daemon", "--dir", str(self.files.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(LinksNotRunning, OSError, ValueError):
                if send(self.files, {"cmd": "status"}, timeout=2).get("ok"):
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()  # ours, by its handle, if it still runs
                _, err = self.proc.communicate(timeout=10)
                pytest.fail(f"the link emulator did not start: {err}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


def make_lab(echo_server: Server, sink_server: Server, back_server: Server) -> Emu:
    # A short path: the control socket's path must fit a sockaddr_un.
    files = LabFiles(Path(tempfile.mkdtemp(prefix="lk", dir="/tmp")))
    emu = Emu(files, free_port(), free_port(), free_port())
    files.links.mkdir()
    files.forwards.write_text(
        "# FROM TO LISTEN TARGET WHAT\n"
        f"A B {emu.echo_port} {echo_server.port} echo\n"
        f"A B {emu.sink_port} {sink_server.port} sink\n"
        f"B A {emu.back_port} {back_server.port} echo\n"
    )
    files.wan.write_text(f"delay: {DELAY_MS}\njitter: 0.1\n")
    return emu


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server, Server]]:
    found = (Server(echo), Server(sink), Server(echo))
    yield found
    for server in found:
        server.close()


@pytest.fixture(scope="module")
def running(servers: tuple[Server, Server, Server]) -> Iterator[Emu]:
    emu = make_lab(*servers)
    emu.start()
    yield emu
    emu.stop()
    shutil.rmtree(emu.files.dir, ignore_errors=True)


@pytest.fixture
def emu(running: Emu) -> Iterator[Emu]:
    """The running emulator; its link healed and back to 50 ms each way afterwards."""
    yield running
    running.cmd(cmd="heal", a="A", b="B")
    running.cmd(cmd="set", a="A", b="B", delay=[DELAY_MS, DELAY_MS], jitter=0.1,
                bandwidth=[None, None])  # fmt: skip


def connect(port: int, timeout: float = 5) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def exchange(sock: socket.socket, data: bytes) -> float:
    """Send data, read it back from the echo server; the seconds it took."""
    start = time.monotonic()
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed"
        got += chunk
    assert got == data
    return time.monotonic() - start


# ---- delay -----------------------------------------------------------------------------


def test_a_round_trip_takes_both_one_way_delays(emu: Emu) -> None:
    with connect(emu.echo_port) as sock:
        # A new connection: the handshake's round trip, then the request's.
        assert exchange(sock, b"hello") >= 3 * DELAY_MS * 0.9 / 1000
        for i in range(5):
            assert exchange(sock, b"ping %d" % i) >= 2 * DELAY_MS * 0.9 / 1000


def test_the_other_direction_has_its_own_listeners(emu: Emu) -> None:
    with connect(emu.back_port) as sock:
        exchange(sock, b"warm")
        assert exchange(sock, b"from B") >= 2 * DELAY_MS * 0.9 / 1000


def test_set_changes_the_delay_of_open_connections_at_once(emu: Emu) -> None:
    with connect(emu.echo_port) as sock:
        exchange(sock, b"warm")
        emu.cmd(cmd="set", a="A", b="B", delay=[20, 180], jitter=0)
        assert emu.link().delay == (20, 180)
        assert exchange(sock, b"slow") >= 0.2 * 0.95
        emu.cmd(cmd="set", a="B", b="A", delay=[300, 10])  # named the other way round
        assert emu.link().delay == (10, 300)
        assert exchange(sock, b"slower") >= 0.31 * 0.95


def test_chunks_arrive_in_order_whatever_the_jitter(emu: Emu) -> None:
    emu.cmd(cmd="set", a="A", b="B", delay=[20, 20], jitter=1)
    with connect(emu.echo_port) as sock:
        sent = b"".join(b"%05d," % i for i in range(2000))
        for i in range(0, len(sent), 60):  # many small writes, each its own chunk
            sock.sendall(sent[i : i + 60])
        got = b""
        deadline = time.monotonic() + 20
        while len(got) < len(sent) and time.monotonic() < deadline:
            got += sock.recv(65536)
        assert got == sent


def test_a_half_close_is_passed_on(emu: Emu) -> None:
    with connect(emu.echo_port) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        assert got == b"last words"


# ---- cuts --------------------------------------------------------------------------------


def test_the_kernel_drops_syns_to_a_full_backlog_0_listener() -> None:
    """What the black hole relies on: a listener with backlog 0 whose one
    accept-queue slot is taken makes further connects time out."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        port = lsock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            for _ in range(2):
                with socket.socket() as sock:
                    sock.settimeout(1)
                    with pytest.raises(socket.timeout):
                        sock.connect(("127.0.0.1", port))


def test_refuse_refuses_new_connections_and_resets_open_ones(emu: Emu) -> None:
    emu.cmd(cmd="set", a="A", b="B", delay=[5, 5])
    with connect(emu.echo_port) as sock:
        exchange(sock, b"before")
        emu.cmd(cmd="cut", a="A", b="B", mode="refuse")
        assert emu.link().cut == "refuse"
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"after")
            sock.recv(100)
    with pytest.raises(ConnectionRefusedError):
        connect(emu.echo_port)
    with pytest.raises(ConnectionRefusedError):
        connect(emu.back_port)  # both directions
    emu.cmd(cmd="heal", a="A", b="B")
    with connect(emu.echo_port) as sock:
        exchange(sock, b"healed")


def test_a_black_hole_times_connects_out_and_stalls_open_connections(emu: Emu) -> None:
    emu.cmd(cmd="set", a="A", b="B", delay=[5, 5])
    with connect(emu.echo_port) as sock:
        exchange(sock, b"before")
        emu.cmd(cmd="cut", a="A", b="B", mode="blackhole")
        assert emu.link().cut == "blackhole"
        for port in (emu.echo_port, emu.back_port):
            with socket.socket() as new, pytest.raises(socket.timeout):
                new.settimeout(1)
                new.connect(("127.0.0.1", port))
        sock.settimeout(0.5)
        sock.sendall(b"held 1,")
        sock.sendall(b"held 2")
        with pytest.raises(socket.timeout):
            sock.recv(100)
        emu.cmd(cmd="heal", a="A", b="B")
        sock.settimeout(5)
        got = b""
        while len(got) < len(b"held 1,held 2"):
            chunk = sock.recv(100)
            assert chunk
            got += chunk
        assert got == b"held 1,held 2"
    with connect(emu.echo_port) as sock:
        exchange(sock, b"new after heal")


def test_a_black_hole_holds_a_bounded_amount(emu: Emu) -> None:
    block = b"x" * 65536
    sent = 0
    with connect(emu.sink_port) as sock:
        emu.cmd(cmd="cut", a="A", b="B", mode="blackhole")
        sock.setblocking(False)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sent < 256 * 1024 * 1024:
            try:
                sent += sock.send(block)
            except BlockingIOError:
                time.sleep(0.05)
        # The emulator's window (4 MiB) and the kernel's socket buffers: far
        # less than what loopback moves in 3 s.
        assert sent < 64 * 1024 * 1024


def test_a_connection_to_a_port_nothing_listens_on_is_reset(servers: Any) -> None:
    files = LabFiles(Path(tempfile.mkdtemp(prefix="lk", dir="/tmp")))
    listen = free_port()
    files.links.mkdir()
    files.forwards.write_text(f"A B {listen} {free_port()} nothing\n")
    files.wan.write_text("delay: 20\n")
    emu = Emu(files, listen, 0, 0)
    emu.start()
    try:
        with connect(listen) as sock:
            sock.settimeout(5)
            with pytest.raises(ConnectionResetError):
                sock.sendall(b"anyone?")
                assert sock.recv(100) == b"", "closed without a reset"
    finally:
        emu.stop()
        shutil.rmtree(files.dir, ignore_errors=True)


# ---- bandwidth ---------------------------------------------------------------------------


def send_all(port: int, size: int) -> None:
    with connect(port, timeout=60) as sock:
        sock.sendall(b"y" * size)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.makefile().readline()
    assert int(answer) == size


def test_a_bandwidth_cap_is_shared_by_the_connections_of_a_direction(emu: Emu) -> None:
    mbit = 16.0  # 2 MB/s
    emu.cmd(cmd="set", a="A", b="B", delay=[1, 1], bandwidth=[mbit, None])
    size = 1_500_000
    start = time.monotonic()
    threads = [threading.Thread(target=send_all, args=(emu.sink_port, size)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    took = time.monotonic() - start
    assert not any(t.is_alive() for t in threads)
    assert took >= 0.85 * 2 * size / (mbit * 1e6 / 8)


# ---- state ---------------------------------------------------------------------------------


def test_status_and_a_restart_keep_the_links_state(servers: tuple[Server, Server, Server]) -> None:
    emu = make_lab(*servers)
    emu.start()
    try:
        assert emu.link() == Link("A", "B", (DELAY_MS, DELAY_MS), 0.1)
        emu.cmd(cmd="set", a="A", b="B", delay=[12, 34], bandwidth=[100, None])
        emu.cmd(cmd="cut", a="A", b="B", mode="refuse")
        assert load_state(emu.files)[frozenset("AB")].delay == (12, 34)
        lines = show(emu.files)
        assert "A <-> B" in lines[0] and "delay 12 ms ->, 34 ms <-" in lines[0], lines
        assert "bandwidth 100 Mbit/s ->, none <-" in lines[0], lines
        assert "CUT (refuse)" in lines[0], lines
        emu.stop()
        assert "NOT RUNNING" in show(emu.files)[0]
        emu.start()
        assert emu.link() == Link("A", "B", (12, 34), 0.1, (100, None), "refuse")
        with pytest.raises(ConnectionRefusedError):
            connect(emu.echo_port)
        emu.cmd(cmd="reload", reset=True)  # what `up --wan` does: every link from the WAN
        assert emu.link() == Link("A", "B", (DELAY_MS, DELAY_MS), 0.1)
        connect(emu.echo_port).close()
    finally:
        emu.stop()
        shutil.rmtree(emu.files.dir, ignore_errors=True)


def test_bad_commands_are_answered_with_an_error(emu: Emu) -> None:
    assert "unknown site 'C'" in send(emu.files, {"cmd": "cut", "a": "A", "b": "C"})["error"]
    assert "bad mode" in send(emu.files, {"cmd": "cut", "a": "A", "b": "B", "mode": "x"})["error"]
    answer = send(emu.files, {"cmd": "set", "a": "A", "b": "B", "delay": [-1, 5]})
    assert "expected a delay from 0" in answer["error"]
    assert emu.link().delay == (DELAY_MS, DELAY_MS)


def test_no_emulator_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LinksNotRunning, match="not running"):
        send(LabFiles(tmp_path), {"cmd": "status"})


# ---- the WAN file -------------------------------------------------------------------------


def test_the_default_wan() -> None:
    wan = default_wan()
    assert wan.link("Berlin", "Denver").delay == (75, 75)
    assert wan.link("Paris", "Berlin").delay == (5, 5)
    assert wan.link("Denver", "Paris").delay == (75, 75)
    assert wan.link("Berlin", "Rome").delay == (50, 50)  # a pair not listed
    assert wan.link("Berlin", "Denver").jitter == 0.1
    assert wan.link("Berlin", "Denver").bandwidth == (None, None)
    assert "Berlin, Denver" in DEFAULT_WAN


def test_a_wan_file_with_both_directions_and_bandwidth() -> None:
    wan = parse_wan(
        "jitter: 0.2\nbandwidth: 50\nlinks:\n"
        "  - {between: [Berlin, Denver], delay: [70, 80], bandwidth: [100, null]}\n",
        "wan.yaml",
        ["Berlin", "Denver", "Paris"],
    )
    assert wan.link("Berlin", "Denver") == Link("Berlin", "Denver", (70, 80), 0.2, (100, None))
    assert wan.link("Denver", "Berlin") == Link("Denver", "Berlin", (80, 70), 0.2, (None, 100))
    assert wan.link("Berlin", "Paris") == Link("Berlin", "Paris", (50, 50), 0.2, (50, 50))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dealy: 5\n", "wan.yaml: unknown key 'dealy' (expected one of: delay, jitter"),
        ("links:\n  - {between: [Berln, Denver]}\n", "wan.yaml: links[0].between: unknown site "
         "'Berln' (the lab's sites: Berlin, Denver)"),
        ("links:\n  - {between: [Berlin]}\n", "links[0].between: expected two site names"),
        ("links:\n  - {between: [Berlin, Berlin]}\n", "expected two different sites"),
        ("links:\n  - {between: [Berlin, Denver], delay: fast}\n",
         "links[0].delay: expected a delay in ms (a number), got 'fast'"),
        ("links:\n  - {between: [Berlin, Denver], delay: [1, 2, 3]}\n",
         "expected one value, or two"),
        ("links:\n  - {between: [Berlin, Denver], delay: -3}\n", "expected a delay from 0"),
        ("links:\n  - {between: [Berlin, Denver], mode: cut}\n", "unknown key 'mode'"),
        ("jitter: 2\n", "wan.yaml: jitter: expected a jitter from 0 to 1"),
        ("bandwidth: 0\n", "expected a bandwidth above 0"),
        ("links: {Berlin: 5}\n", "links: expected a list"),
        ("- 1\n", "expected a mapping"),
        ("delay: [1\n", "wan.yaml: not valid YAML at line 2"),
        ("links:\n  - {between: [Berlin, Denver]}\n  - {between: [Denver, Berlin]}\n",
         "the link Denver-Berlin is given twice"),
    ],
)  # fmt: skip
def test_a_bad_wan_file_names_the_file_the_key_and_what_was_expected(
    text: str, message: str
) -> None:
    with pytest.raises(WanError) as err:
        parse_wan(text, "wan.yaml", ["Berlin", "Denver"])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_forwards_and_planned_links() -> None:
    forwards = parse_forwards("# c\nA B 20100 18100 gateway\nB A 21000 18000 gateway\n", "f")
    assert [f.listen for f in forwards] == [20100, 21000]
    with pytest.raises(WanError, match="f, line 1: expected FROM TO LISTEN TARGET WHAT"):
        parse_forwards("A B x 1 y\n", "f")
    wan = parse_wan("delay: 10\n", "w")
    saved = {frozenset("AB"): Link("B", "A", (1, 2), 0.0, cut="blackhole")}
    kept = plan_links(["A", "B", "C"], wan, saved, reset=False)
    assert kept[0] == Link("A", "B", (2, 1), 0.0, cut="blackhole")  # turned to the lab's order
    assert kept[1] == Link("A", "C", (10, 10), 0.1)
    assert plan_links(["A", "B"], wan, saved, reset=True)[0] == Link("A", "B", (10, 10), 0.1)


def test_the_emulator_reports_a_port_it_cannot_take() -> None:
    files = LabFiles(Path(tempfile.mkdtemp(prefix="lk", dir="/tmp")))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        files.links.mkdir()
        files.forwards.write_text(f"A B {port} 1 gateway\n")
        out = subprocess.run(
            [sys.executable, "-m", "scoped_cli.links", "daemon", "--dir", str(files.dir)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    shutil.rmtree(files.dir, ignore_errors=True)
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} (A -> B gateway :1)" in out.stderr
    assert "Traceback" not in out.stderr
    assert os.strerror(errno.EADDRINUSE) in out.stderr  # the reason is the OS's, in words


def test_installing_a_wan_file_and_going_back_to_the_default(tmp_path: Path) -> None:
    files = LabFiles(tmp_path)
    files.links.mkdir()
    files.forwards.write_text("Berlin Denver 20100 18100 gateway\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("links:\n  - {between: [Denver, Berlin], delay: 9}\n")
    install_wan(files, mine)
    assert files.current_wan().link("Berlin", "Denver").delay == (9, 9)
    mine.write_text("links:\n  - {between: [Denver, Rome], delay: 9}\n")
    with pytest.raises(WanError, match="unknown site 'Rome'"):
        install_wan(files, mine)
    assert files.current_wan().link("Berlin", "Denver").delay == (9, 9)
    install_wan(files, "default")
    assert not files.wan.exists()
    assert files.current_wan().link("Berlin", "Denver").delay == (75, 75)
