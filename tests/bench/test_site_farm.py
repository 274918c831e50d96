"""The benchmark's stand-in sites (tests/bench/site_farm.py) answer as
bench_scale.py counts on: the farm run as a process, as the benchmark runs
it, and spoken to over loopback (raw sockets where the bytes on the wire
matter: keep-alive, pipelining, malformed requests)."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

FARM = Path(__file__).resolve().parent / "site_farm.py"
SPEC = "ok:50,ok:0,silent:0"
SLOW, QUICK, SILENT = 0, 1, 2
"""The sites of SPEC, by index."""
DELAY = 0.050
"""SLOW's delay."""
CLOCK = 0.002
"""How much sooner than its delay an answer may come: libuv's clock counts
whole milliseconds."""
ITEMS = 5
WAIT = 5.0
"""The longest any step waits for the farm."""


@dataclasses.dataclass(frozen=True)
class Farm:
    ports: list[int]
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """The farm on SPEC, once it has written its ports; stopped by its PID."""
    tmp = tmp_path_factory.mktemp("site-farm")
    ports_file, log = tmp / "ports", tmp / "farm.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(FARM), str(ports_file), SPEC],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 15
        while not (ports_file.exists() and ports_file.read_text().endswith("\n")):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the farm wrote no ports file"
            time.sleep(0.05)
        ports = [int(p) for p in ports_file.read_text().split()]
        assert len(ports) == len(SPEC.split(","))
        yield Farm(ports, proc, log)
    finally:
        proc.terminate()  # ours, by its PID
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


def servers(index: int) -> list[dict[str, str]]:
    """Site ``index``'s servers, sorted by name."""
    return [{"id": f"{index:05d}-{i:02d}", "name": f"vm-{index:05d}-{i:02d}"} for i in range(ITEMS)]


def request(port: int, target: str = "/v2.1/servers", method: str = "GET") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


class Wire:
    """One connection to a site, its answers read one by one off the bytes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buffer = b""
        self.deadline = time.monotonic() + 2 * WAIT

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[str, dict[str, str], bytes]:
        """The status line, headers (names in lower case) and body of the
        next answer, framed by its Content-Length."""
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        headers = {name.lower(): value for name, value in headers.items()}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self) -> bool:
        """Whether the farm closes the connection (within WAIT), nothing
        more than what was read having come."""
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False

    def _more(self) -> None:
        assert time.monotonic() < self.deadline, "the answer never ended"
        data = self.sock.recv(65536)
        assert data, f"the farm closed the connection; had {self.buffer!r}"
        self.buffer += data

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def wire(port: int) -> Iterator[Wire]:
    w = Wire(port)
    try:
        yield w
    finally:
        w.close()


def walk(client: httpx.Client, url: str) -> tuple[list[str], int]:
    """The ids of every page from ``url`` on, following the next links."""
    ids: list[str] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None and pages < 10:
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        ids += [s["id"] for s in body["servers"]]
        links = [ln["href"] for ln in body.get("servers_links", []) if ln["rel"] == "next"]
        next_url = links[0] if links else None
        pages += 1
    assert next_url is None, "the paging did not end"
    return ids, pages


def test_the_list_is_every_server_sorted_as_json(farm: Farm) -> None:
    for index in (SLOW, QUICK):
        port = farm.ports[index]
        response = httpx.get(f"http://127.0.0.1:{port}/v2.1/servers", timeout=WAIT)
        assert response.status_code == 200
        assert response.content == orjson.dumps({"servers": servers(index)})
        assert response.headers["content-type"] == "application/json"
        assert response.headers["content-length"] == str(len(response.content))
        ids = [s["id"] for s in response.json()["servers"]]
        assert ids == [f"{index:05d}-{i:02d}" for i in range(ITEMS)]
    # any method, any path: the same list, as the aiohttp farm routed * on /{tail:.*}
    other = httpx.post(f"http://127.0.0.1:{farm.ports[QUICK]}/compute/x", timeout=WAIT)
    assert other.content == orjson.dumps({"servers": servers(QUICK)})


def test_an_answer_comes_no_sooner_than_the_sites_delay(farm: Farm) -> None:
    with wire(farm.ports[SLOW]) as w:
        for _ in range(2):
            start = time.perf_counter()
            w.send(request(farm.ports[SLOW]))
            status, _, _ = w.answer()
            took = time.perf_counter() - start
            assert status == "HTTP/1.1 200 OK"
            assert took >= DELAY - CLOCK, took


def test_a_kept_alive_connection_answers_request_after_request(farm: Farm) -> None:
    port = farm.ports[QUICK]
    with wire(port) as w:
        for _ in range(2):
            w.send(request(port))
            status, headers, body = w.answer()
            assert status == "HTTP/1.1 200 OK"
            assert "connection" not in headers  # HTTP/1.1: kept alive
            assert body == orjson.dumps({"servers": servers(QUICK)})
        assert not w.buffer


def test_paging_by_the_next_href_gives_every_item_once(farm: Farm) -> None:
    port = farm.ports[SLOW]
    expected = [s["id"] for s in servers(SLOW)]
    with httpx.Client(timeout=WAIT) as client:
        first = client.get(f"http://127.0.0.1:{port}/v2.1/servers?limit=2").json()
        assert [s["id"] for s in first["servers"]] == expected[:2]
        assert first["servers_links"] == [
            {
                "rel": "next",
                "href": f"http://127.0.0.1:{port}/v2.1/servers?limit=2&marker={expected[1]}",
            }
        ]
        ids, pages = walk(client, f"http://127.0.0.1:{port}/v2.1/servers?limit=2")
        assert ids == expected
        assert pages == 3  # 2 + 2 + 1
        # the href is built from the request's Host header, whatever it names
        other = client.get(
            f"http://127.0.0.1:{port}/v2.1/servers?limit=2",
            headers={"Host": "site.example:8774"},
        ).json()
        (link,) = other["servers_links"]
        assert link["href"] == f"http://site.example:8774/v2.1/servers?limit=2&marker={expected[1]}"


def test_pipelined_requests_are_answered_in_order(farm: Farm) -> None:
    port = farm.ports[SLOW]
    with wire(port) as w:
        start = time.perf_counter()
        w.send(
            request(port, "/v2.1/servers?limit=1")
            + request(port, "/v2.1/servers?limit=2&marker=00000-00")
            + request(port)
        )
        answers = [w.answer() for _ in range(3)]
        took = time.perf_counter() - start
    assert [status for status, _, _ in answers] == ["HTTP/1.1 200 OK"] * 3
    pages = [orjson.loads(body)["servers"] for _, _, body in answers]
    assert [[s["id"] for s in page] for page in pages] == [
        ["00000-00"],
        ["00000-01", "00000-02"],
        [s["id"] for s in servers(SLOW)],
    ]
    assert took >= DELAY - CLOCK


def test_a_silent_site_takes_the_request_and_never_answers(farm: Farm) -> None:
    with wire(farm.ports[SILENT]) as w:
        w.send(request(farm.ports[SILENT]))
        w.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            w.sock.recv(1)  # neither an answer nor a close


@pytest.mark.parametrize(
    "before", [b"", b"GET /v2.1/servers HTTP/1.1\r\nHost: x\r\n\r\n"], ids=["alone", "after-one"]
)
def test_a_malformed_request_gets_400_and_a_close(farm: Farm, before: bytes) -> None:
    with wire(farm.ports[SLOW]) as w:
        w.send(before + b"NOT A REQUEST\r\n\r\n")
        if before:  # the good request first, answered in its turn
            status, _, _ = w.answer()
            assert status == "HTTP/1.1 200 OK"
        status, headers, _ = w.answer()
        assert status == "HTTP/1.1 400 Bad Request"
        assert headers["connection"] == "close"
        assert w.closed()


def test_clients_leaving_mid_wait_break_nothing(farm: Farm) -> None:
    port = farm.ports[SLOW]
    for abrupt in (False, True):
        for _ in range(10):
            with wire(port) as w:
                w.send(request(port) * 2)
                if abrupt:  # a reset, not a FIN
                    w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(2 * DELAY)  # their timers fire
    with wire(port) as w:
        w.send(request(port))
        status, _, body = w.answer()
    assert status == "HTTP/1.1 200 OK"
    assert body == orjson.dumps({"servers": servers(SLOW)})
    assert farm.proc.poll() is None
    assert farm.log.read_text() == ""  # no error nor warning logged
