"""The core through its own seam: real Gateway, Executor and policies over an
in-memory upstream (scoped.memory), no sockets. Merge, paging, failover and
verdicts, fast and deterministic; the wire is tested in test_upstream.py and
through real gateways in test_gateway.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from scoped.config import parse_config
from scoped.errors import Refused, Reset
from scoped.gateway import Gateway
from scoped.http import Body, Request, Response
from scoped.memory import Exchange, MemoryReply, MemoryUpstream, json_reply

SITES = ("Berlin", "Denver", "Paris")
ENTRY = "http://gw.berlin.test/compute"


def origin(site: str) -> str:
    return f"http://{site.lower()}.test"


def config(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "site": "Berlin",
        "sites": {
            s: {"endpoints": {"compute": f"{origin(s)}/compute"}} for s in SITES if s != "Berlin"
        },
        "backends": {"compute": f"{origin('Berlin')}/compute"},
        "circuit": {"failures": 2, "cooldown": 0.05, "probe_interval": 60},
        "retries": {"attempts": 2, "backoff": 0.001},
        "timeouts": {"connect": 0.2, "total": 0.3},
    }
    data["sites"]["Berlin"] = {}
    data.update(overrides)
    return data


class Nova:
    """A compute site in memory: servers listed in order, ``limit`` and
    ``marker`` as Nova reads them, creates and deletes."""

    def __init__(self, site: str, n: int) -> None:
        self.site = site
        self.servers = [{"id": f"{site.lower()}-{i}", "name": f"vm{i}"} for i in range(n)]
        self.seen: list[Exchange] = []

    async def __call__(self, ex: Exchange) -> MemoryReply:
        self.seen.append(ex)
        if ex.method == "POST":
            server = {"id": f"{self.site.lower()}-new", "name": "new"}
            self.servers.append(server)
            return json_reply(202, {"server": server})
        if ex.method == "DELETE":
            gone = ex.path.rsplit("/", 1)[-1]
            kept = [s for s in self.servers if s["id"] != gone]
            if len(kept) == len(self.servers):
                return json_reply(404, {"itemNotFound": {"message": f"{gone} not found"}})
            self.servers[:] = kept
            return MemoryReply(204)
        items = self.servers
        marker = ex.query.get("marker")
        if marker is not None:
            ids = [s["id"] for s in items]
            if marker not in ids:
                return json_reply(400, {"badRequest": {"message": f"marker {marker} not found"}})
            items = items[ids.index(marker) + 1 :]
        body: dict[str, Any] = {"servers": items}
        limit = ex.query.get("limit")
        if limit is not None and len(items) > int(limit):
            body["servers"] = items[: int(limit)]
            href = f"{origin(self.site)}/compute/v2.1/servers?limit={limit}&marker=x"
            body["servers_links"] = [{"rel": "next", "href": href}]
        return json_reply(200, body)


def answering(status: int, data: object = None) -> Any:
    async def handler(ex: Exchange) -> MemoryReply:
        return json_reply(status, data if data is not None else {"status": status})

    return handler


def failing(error: Exception) -> Any:
    async def handler(ex: Exchange) -> MemoryReply:
        raise error

    return handler


def silent(seconds: float = 5.0) -> Any:
    async def handler(ex: Exchange) -> MemoryReply:
        await asyncio.sleep(seconds)
        return json_reply(200, {})

    return handler


class Core:
    def __init__(self, upstream: MemoryUpstream, **overrides: Any) -> None:
        self.upstream = upstream
        self.gateway = Gateway(parse_config(config(**overrides), "<test>"), upstream)

    def request(
        self,
        method: str,
        path: str,
        scope: str | None,
        query: str = "",
        body: bytes = b"",
    ) -> Response:
        headers: tuple[tuple[str, str], ...] = (("x-auth-token", "t"),)
        if scope is not None:
            headers += (("x-scope", scope),)
        req = Request(method, "compute", path, query, headers, ENTRY, Body(body))
        return asyncio.run(self.gateway.handle(req))


def body_of(resp: Response) -> Any:
    assert isinstance(resp.body, bytes), "expected a body in memory"
    return orjson.loads(resp.body)


def sites_of(resp: Response) -> dict[str, str]:
    value = dict(resp.headers).get("x-scope-sites", "")
    return {e.split("=")[0]: e.split("=")[1].split(";")[0] for e in value.split(", ") if e}


@pytest.fixture
def nova() -> Iterator[dict[str, Nova]]:
    yield {s: Nova(s, 3) for s in SITES}


def core_of(sites: dict[str, Any], **overrides: Any) -> Core:
    return Core(MemoryUpstream({origin(s): h for s, h in sites.items()}), **overrides)


def test_a_fan_out_merges_every_site_in_plan_order(nova: dict[str, Nova]) -> None:
    core = core_of(nova)
    resp = core.request("GET", "/v2.1/servers", "<nova: Denver&Berlin>")
    assert resp.status == 200
    ids = [s["id"] for s in body_of(resp)["servers"]]
    assert ids == [f"denver-{i}" for i in range(3)] + [f"berlin-{i}" for i in range(3)]
    assert sites_of(resp) == {"Denver": "200", "Berlin": "200"}
    assert ("x-scope", "<compute: Denver&Berlin, *: Berlin>") in resp.headers


@pytest.mark.parametrize("limit", [1, 2, 4, 7])
def test_paging_a_fan_out_returns_every_item_exactly_once(
    nova: dict[str, Nova], limit: int
) -> None:
    core = core_of(nova)
    query, seen = f"limit={limit}", []
    for _ in range(20):  # bounded: 9 items
        resp = core.request("GET", "/v2.1/servers", "<nova: Berlin&Denver&Paris>", query)
        assert resp.status == 200
        data = body_of(resp)
        assert len(data["servers"]) <= limit
        seen += [s["id"] for s in data["servers"]]
        links = data.get("servers_links")
        if not links:
            break
        href = links[0]["href"]
        assert href.startswith(ENTRY), "the next link leads back to this gateway"
        query = urlsplit(href).query
    assert sorted(seen) == sorted(f"{s.lower()}-{i}" for s in SITES for i in range(3))
    assert len(seen) == len(set(seen))


def test_a_failover_moves_past_a_refused_and_a_failing_site(nova: dict[str, Nova]) -> None:
    core = core_of(
        {
            "Denver": failing(Refused("connection refused")),
            "Paris": answering(500),
            "Berlin": nova["Berlin"],
        }
    )
    resp = core.request("GET", "/v2.1/servers", "<nova: Denver|Paris|Berlin>")
    assert resp.status == 200
    assert sites_of(resp) == {"Denver": "refused", "Paris": "500", "Berlin": "200"}
    assert [s["id"] for s in body_of(resp)["servers"]] == ["berlin-0", "berlin-1", "berlin-2"]


def test_a_failover_stops_at_a_site_that_says_no() -> None:
    core = core_of({"Denver": answering(403), "Berlin": answering(200)})
    resp = core.request("GET", "/v2.1/servers", "<nova: Denver|Berlin>")
    assert resp.status == 403
    assert sites_of(resp) == {"Denver": "403"}


def test_a_write_that_may_have_been_processed_is_not_sent_elsewhere() -> None:
    berlin = Nova("Berlin", 0)
    core = core_of({"Denver": failing(Reset("the site closed the connection", sent=True))})
    core.upstream.handlers[origin("Berlin")] = berlin
    resp = core.request("POST", "/v2.1/servers", "<nova: Denver|Berlin>", body=b"{}")
    assert resp.status == 502
    message = body_of(resp)["error"]["message"]
    assert "POST is not idempotent and the site may have processed it" in message
    assert berlin.seen == [], "Berlin must not get a write Denver may have done"


def test_a_refused_write_fails_over_since_nothing_was_sent() -> None:
    berlin = Nova("Berlin", 0)
    core = core_of({"Denver": failing(Refused("connection refused")), "Berlin": berlin})
    resp = core.request("POST", "/v2.1/servers", "<nova: Denver|Berlin>", body=b"{}")
    assert resp.status == 202
    assert [e.method for e in berlin.seen] == ["POST"]


def test_a_fan_out_create_that_fails_somewhere_is_undone_where_it_was_done() -> None:
    berlin = Nova("Berlin", 0)
    core = core_of({"Berlin": berlin, "Denver": answering(500)})
    resp = core.request("POST", "/v2.1/servers", "<nova: Berlin&Denver>", body=b"{}")
    assert resp.status == 502
    error = body_of(resp)["error"]
    assert error["message"].startswith("a fan-out (&) write failed at some sites: Berlin: 202")
    assert error["message"].endswith("done at Berlin, then undone (deleted)")
    entries = {e["site"]: e for e in error["sites"]}
    assert entries["Berlin"]["id"] == "berlin-new"
    assert entries["Berlin"]["undone"] is True
    assert entries["Denver"]["status"] == 500
    assert [(e.method, e.path) for e in berlin.seen] == [
        ("POST", "/compute/v2.1/servers"),
        ("DELETE", "/compute/v2.1/servers/berlin-new"),
    ]
    assert berlin.servers == [], "nothing is left that the answer does not name"
    assert any(k == "x-openstack-request-id" for k, _ in resp.headers)


def test_the_same_no_from_every_site_is_passed_on() -> None:
    core = core_of({"Berlin": answering(404), "Denver": answering(404)})
    resp = core.request("GET", "/v2.1/servers/x", "<nova: Berlin&Denver>")
    assert resp.status == 404
    assert body_of(resp)["error"]["message"].startswith("no site has it")


def test_sites_that_all_stay_silent_are_a_gateway_timeout() -> None:
    core = core_of({"Berlin": silent(), "Denver": silent()})
    resp = core.request("GET", "/v2.1/servers", "<nova: Berlin|Denver>")
    assert resp.status == 504
    assert sites_of(resp) == {"Berlin": "timeout", "Denver": "timeout"}


def test_an_optional_site_that_fails_leaves_the_rest(nova: dict[str, Nova]) -> None:
    core = core_of({"Berlin": nova["Berlin"], "Denver": failing(Refused("refused"))})
    resp = core.request("GET", "/v2.1/servers", "<nova: Berlin&Denver?>")
    assert resp.status == 200
    assert len(body_of(resp)["servers"]) == 3
    assert sites_of(resp)["Denver"] == "refused"


def test_a_refused_connection_of_a_read_is_tried_again_once(nova: dict[str, Nova]) -> None:
    tries: list[int] = []

    async def flaky(ex: Exchange) -> MemoryReply:
        tries.append(1)
        if len(tries) == 1:
            raise Refused("connection refused")
        return await nova["Denver"](ex)

    core = core_of({"Denver": flaky})
    resp = core.request("GET", "/v2.1/servers", "<nova: Denver>")
    assert resp.status == 200
    assert len(tries) == 2
    assert sites_of(resp) == {"Denver": "200"}


def trial_outcome(core: Core, scope: str) -> str:
    """Denver's outcome in the first request after the cooldown (the trial)."""
    for _ in range(50):  # bounded: the cooldown is 0.05 s
        asyncio.run(asyncio.sleep(0.01))
        outcome = sites_of(core.request("GET", "/v2.1/servers", scope))["Denver"]
        if outcome != "skipped":
            return outcome
    return "skipped"


def test_an_open_circuit_skips_the_site_and_a_refused_trial_keeps_it_open() -> None:
    refusals: list[int] = []

    async def refusing(ex: Exchange) -> MemoryReply:
        refusals.append(1)
        raise Refused("connection refused")

    core = core_of({"Denver": refusing, "Berlin": answering(200, {"servers": []})})
    scope = "<nova: Denver|Berlin>"
    for _ in range(2):  # failures: 2 opens it
        assert sites_of(core.request("GET", "/v2.1/servers", scope))["Denver"] == "refused"
    before = len(refusals)
    assert sites_of(core.request("GET", "/v2.1/servers", scope))["Denver"] == "skipped"
    assert len(refusals) == before, "a skipped site is not called"
    # After the cooldown one trial goes through; refused (its retry stopped
    # by the circuit), it is reported refused and the circuit stays open.
    outcome = trial_outcome(core, scope)
    assert outcome == "refused"
    assert core.gateway.circuits.state("Denver").name == "OPEN"
    assert sites_of(core.request("GET", "/v2.1/servers", scope))["Denver"] == "skipped"


def test_the_client_request_id_is_forwarded_only_when_it_is_well_formed(
    nova: dict[str, Nova],
) -> None:
    core = core_of(nova)
    good = "req-0123abcd-0123-4567-89ab-0123456789ab"
    for sent, forwarded_as in ((good, good), ("req-<script>", None)):
        req = Request(
            "GET",
            "compute",
            "/v2.1/servers",
            "",
            (("x-openstack-request-id", sent), ("x-scope", "<nova: Denver>")),
            ENTRY,
        )
        resp = asyncio.run(core.gateway.handle(req))
        assert resp.status == 200
        got = nova["Denver"].seen[-1].header("x-openstack-request-id")
        assert got is not None
        if forwarded_as is None:
            assert got != sent and got.startswith("req-")
        else:
            assert got == forwarded_as
        assert [v for k, v in nova["Denver"].seen[-1].headers].count(got) == 1


def test_a_client_that_disconnects_mid_body_ends_the_request_without_a_crash() -> None:
    nova = Nova("Denver", 0)

    async def stream() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        from scoped.errors import ClientDisconnected  # noqa: PLC0415

        raise ClientDisconnected

    async def main() -> Response:
        core = core_of({"Denver": nova})
        req = Request(
            "PUT",
            "compute",
            "/v2.1/servers/x",
            "",
            (("x-scope", "<nova: Denver>"), ("content-length", "100000")),
            ENTRY,
            Body(None, stream(), 100000),
        )
        return await core.gateway.handle(req)

    resp = asyncio.run(main())
    assert resp.status == 499
    assert nova.seen == [], "the site got nothing: the body never arrived whole"


def test_a_scope_parse_error_is_a_400_with_a_request_id() -> None:
    core = core_of({})
    resp = core.request("GET", "/v2.1/servers", "<nova: Berlin&>")
    assert resp.status == 400
    headers = dict(resp.headers)
    assert headers["x-openstack-request-id"].startswith("req-")
    assert "bad scope" in body_of(resp)["error"]["message"]


def test_parse_qsl_helper_reads_the_memory_exchange() -> None:
    ex = Exchange("GET", "http://a.test/x?limit=2&marker=m", (), b"")
    assert ex.query == dict(parse_qsl("limit=2&marker=m"))
    assert (ex.origin, ex.path) == ("http://a.test", "/x")


def test_a_scope_given_only_as_x_scope_travels_complete_on_the_token(
    nova: dict[str, Nova],
) -> None:
    """curl with nothing but X-Scope: every site gets the token carrying the
    complete scope (home site included), so a remote site's token
    validation, and the calls its services make with the token, read it."""
    from scoped.carry import attach, scope_of_token  # noqa: PLC0415

    core = core_of(nova)
    resp = core.request("GET", "/v2.1/servers", "<nova: Berlin&Denver>")
    assert resp.status == 200
    expected = attach("t", "<compute: Berlin&Denver, *: Berlin>")
    for site in ("Berlin", "Denver"):
        assert nova[site].seen[-1].header("x-auth-token") == expected
        assert scope_of_token(expected) == "<compute: Berlin&Denver, *: Berlin>"


def test_a_request_with_no_scope_leaves_the_token_as_it_came(nova: dict[str, Nova]) -> None:
    core = core_of(nova)
    resp = core.request("GET", "/v2.1/servers", None)
    assert resp.status == 200
    assert nova["Berlin"].seen[-1].header("x-auth-token") == "t"


def test_the_gateway_says_what_it_knows() -> None:
    core = core_of({})
    resp = core.gateway.own_response("/.well-known/scoped", "GET")
    assert resp.status == 200
    doc = body_of(resp)
    assert doc["site"] == "Berlin"
    assert doc["sites"] == ["Denver", "Paris", "Berlin"]  # the registry, in its order
    assert doc["services"] == {"compute": "/compute"}


def test_links_are_rewritten_in_a_json_answer_of_any_size() -> None:
    """A 300 KiB list: its links point back at this gateway (above 64 KiB
    too); a value that merely names the site stays as stored."""

    async def big(ex: Exchange) -> MemoryReply:
        base = f"{origin('Denver')}/compute"
        servers = [
            {"id": str(i), "links": [{"rel": "self", "href": f"{base}/v2.1/servers/{i}"}]}
            for i in range(3000)
        ]
        return json_reply(200, {"servers": servers, "note": f"{base}/v2.1/"})

    core = core_of({"Denver": big})
    resp = core.request("GET", "/v2.1/servers/detail", "<nova: Denver>")
    assert resp.status == 200
    assert isinstance(resp.body, bytes) and len(resp.body) > 64 * 1024
    data = body_of(resp)
    assert data["servers"][2999]["links"][0]["href"] == f"{ENTRY}/v2.1/servers/2999"
    assert data["note"] == f"{origin('Denver')}/compute/v2.1/"


def test_a_read_that_no_reachable_site_has_is_not_found() -> None:
    """`<glance: Denver|Paris>` with Denver cut off and Paris not having the
    id: 404 (the client goes on to look it up by name), naming Denver; a
    write in the same case stays a 502."""
    core = core_of({"Denver": failing(Refused("refused")), "Paris": answering(404)})
    read = core.request("GET", "/v2.1/servers/x", "<nova: Denver|Paris>")
    assert read.status == 404
    message = body_of(read)["error"]["message"]
    assert "Denver: refused" in message and "Paris: 404" in message
    write = core.request("DELETE", "/v2.1/servers/x", "<nova: Denver|Paris>")
    assert write.status == 502


def test_the_trial_of_a_silent_site_waits_no_longer_than_a_connect_timeout() -> None:
    """After the cooldown, one user request is the trial: it must not wait
    the total timeout for a site that stays silent."""
    waits: list[tuple[str, float]] = []

    class Watched(MemoryUpstream):
        async def send(self, method: str, url: str, headers: Any, body: Any, timeouts: Any) -> Any:
            waits.append((urlsplit(url).hostname or "", timeouts.total))
            return await super().send(method, url, headers, body, timeouts)

    upstream = Watched({origin("Denver"): silent(), origin("Berlin"): answering(200, {})})
    core = Core(upstream, timeouts={"connect": 0.05, "total": 0.3})
    scope = "<nova: Denver|Berlin>"
    for _ in range(2):  # two silences open the circuit
        assert sites_of(core.request("GET", "/v2.1/servers", scope))["Denver"] == "timeout"
    assert [w for h, w in waits if h == "denver.test"] == [0.3, 0.3]
    outcome = trial_outcome(core, scope)
    assert outcome == "timeout"
    assert [w for h, w in waits if h == "denver.test"][-1] == 0.05  # the trial's bound
    assert core.gateway.circuits.state("Denver").name == "OPEN"


UNAUTHORIZED = {
    "error": {"code": 401, "title": "Unauthorized", "message": "requires authentication"}
}


def test_a_401_caused_by_where_the_scope_sends_identity_says_so() -> None:
    core = core_of({"Denver": answering(401, UNAUTHORIZED)})
    resp = core.request("GET", "/v2.1/servers", "<*: Denver>")
    assert resp.status == 401
    message = body_of(resp)["error"]["message"]
    assert message.startswith("requires authentication (the scope sends identity to Denver")
    assert "add 'identity: Berlin' to the scope" in message
    fan_out = core.request("GET", "/v2.1/servers", "<nova: Denver&Paris, *: Denver>")
    assert "the scope sends identity to Denver" in body_of(fan_out)["error"]["message"]


def test_a_401_with_identity_at_home_is_passed_on_as_it_came() -> None:
    core = core_of({"Denver": answering(401, UNAUTHORIZED)})
    resp = core.request("GET", "/v2.1/servers", "<nova: Denver>")
    assert resp.status == 401
    assert body_of(resp) == UNAUTHORIZED


def test_a_strict_read_fails_at_the_first_required_failure_without_waiting() -> None:
    core = core_of({"Berlin": answering(200, {"servers": []}), "Paris": silent()})
    resp = core.request("GET", "/v2.1/servers", "<nova: Berlin&Denver&Paris>")
    assert resp.status == 502
    # Denver refused at once; Paris (silent until its 0.3 s timeout) was
    # no longer awaited: it is not listed, its call was cancelled.
    assert sites_of(resp) == {"Berlin": "200", "Denver": "refused"}
    assert "Denver: refused" in body_of(resp)["error"]["message"]


def test_an_optional_failure_does_not_cut_a_read_short() -> None:
    core = core_of({"Berlin": answering(200, {"servers": []}), "Paris": silent()})
    resp = core.request("GET", "/v2.1/servers", "<nova: Berlin&Denver?&Paris?>")
    assert resp.status == 200
    assert sites_of(resp) == {"Berlin": "200", "Denver": "refused", "Paris": "timeout"}


def test_a_cancelled_fan_out_cancels_its_calls() -> None:
    """A request that goes away (its client disconnected) leaves no call behind."""
    cancelled: list[str] = []

    async def hanging(ex: Exchange) -> MemoryReply:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(ex.origin)
            raise
        return json_reply(200, {})

    core = core_of({"Berlin": hanging, "Denver": hanging})

    async def run() -> None:
        headers = (("x-auth-token", "t"), ("x-scope", "<nova: Berlin&Denver>"))
        req = Request("GET", "compute", "/v2.1/servers", "", headers, ENTRY, Body())
        task = asyncio.create_task(core.gateway.handle(req))
        for _ in range(100):  # bounded: until both calls are in flight
            await asyncio.sleep(0.001)
            if len(core.upstream.calls) == 2:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)  # well before the calls' own 0.3 s timeout
        # Checked here: at the end of asyncio.run every task is cancelled anyway.
        assert sorted(cancelled) == [origin("Berlin"), origin("Denver")]

    asyncio.run(run())
