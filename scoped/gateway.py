"""The gateway core: parse -> plan -> execute -> merge -> respond.

Framework-free: the ASGI app and the WSGI filter hand in a
:class:`~scoped.http.Request` and send back the :class:`~scoped.http.Response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from functools import lru_cache

import orjson
from scoped_grammar import STAR, Scope, ScopeError, Site, canonical, parse

from .answer import Answer
from .calls import SiteCaller, is_token_path
from .carry import (
    AUTH_TOKEN,
    DISCOVERY_PATH,
    HOP_HEADER,
    SCOPE_HEADER,
    SUBJECT_TOKEN,
    decode_scope,
    parse_hop,
    scope_of_token,
)
from .circuit import Circuits, State, status_counts
from .config import Config
from .errors import ClientDisconnected, ConfigError, Failure, GatewayError
from .execute import Executor
from .federation import Federation
from .http import REQUEST_ID, Request, Response, error_response
from .identity import Identities, IdentityError
from .markers import MarkerStore, MemcachedStore, Pending, StoreError, marker_key
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .metrics import Metrics
from .paging import Listing, listing_of, positions_of
from .plan import Call, Node, node_json, plan_scope
from .policies import policy_stack
from .respond import respond, say_why_refused, scope_headers
from .sites import Registry
from .tls import client_context, hop_refusal
from .upstream import HttpUpstream, Upstream
from .workers import PUBLISH_EVERY, REPUBLISH, WorkerShare

log = logging.getLogger("scoped.gateway")
request_log = logging.getLogger("scoped.request")

_STATUS_CLASS = {n: f"{n}xx" for n in range(1, 6)}
PROBES = 64
"""Health probes in flight at once, over every site whose circuit is open."""
EMPTY = Scope()


class Gateway:
    """One site's gateway: sends each request where its scope says."""

    def __init__(
        self,
        config: Config,
        upstream: Upstream | None = None,
        markers: MarkerStore | None = None,
        share: WorkerShare | None = None,
    ) -> None:
        self.config = config
        self.registry = Registry(config)
        self.metrics = Metrics()
        self.upstream: Upstream = upstream or HttpUpstream(
            config.limits.max_concurrency,
            client_context(config.tls, config.source),
            self.metrics.tls_handshakes.inc,
        )
        self.circuits = Circuits(config.site_names, config.circuit, self._circuit_changed)
        self.identities = Identities(
            config, lambda site: self.metrics.token_renewals.labels(site).inc()
        )
        self.federation = _federation(config)
        if self.federation is not None:
            self.federation.observe = lambda site, ok: self.metrics.token_exchanges.labels(
                site, "ok" if ok else "error"
            ).inc()
        send = policy_stack(
            self.upstream, self.circuits, config.retries, self.identities, self.federation
        )
        self.executor = Executor(
            SiteCaller(self.registry, send, config.limits, self.metrics),
            lambda failed, to: self.metrics.failovers.labels(failed, to).inc(),
        )
        self.markers = markers if markers is not None else _marker_store(config)
        """Where composite markers too long for a link are kept (none: inline)."""
        self.share = share
        """The directory this gateway's sibling workers share (none: one process)."""
        self._tasks: list[asyncio.Task[None]] = []
        self._check_hop = config.tls.serving
        """Over HTTPS, the hop is honoured only from a site's certificate."""

    def _circuit_changed(self, site: str, state: State) -> None:
        self.metrics.circuit_state.labels(site).set(state.value)
        log.warning("circuit of site %s is now %s", site, state.name.lower())

    async def start(self) -> None:
        """Background work: catalog discovery and health probes. Idempotent."""
        if self._tasks:
            return
        for site in self.identities.sites():
            self._tasks.append(asyncio.create_task(self._catalog_loop(site)))
        self._tasks.append(asyncio.create_task(self._probe_loop()))
        if self.share is not None:
            self._tasks.append(asyncio.create_task(self._share_loop(self.share)))

    async def _share_loop(self, share: WorkerShare) -> None:
        """Publish this worker's metrics and circuit changes, and adopt its
        siblings' circuit changes (scoped/workers.py), every PUBLISH_EVERY s."""
        published: tuple[int, int] = (-1, -1)
        rounds = 0
        while True:
            try:
                now = (sum(self.metrics.requests.counts.values()), self.circuits.version)
                rounds += 1
                # Series that move without a request (catalog reads, token
                # renewals): at least every REPUBLISH rounds.
                if now != published or rounds % REPUBLISH == 0:
                    share.write_metrics(self.metrics.families())
                    share.write_circuits(self.circuits.changes)
                    published = now
                self.circuits.adopt(share.others_circuits(), time.time())
            except OSError as err:
                log.warning("workers: %s (the shared directory %s)", err, share.folder)
            await asyncio.sleep(PUBLISH_EVERY)

    async def _catalog_loop(self, site: str) -> None:
        """Read a site's catalog now and then; a Keystone that is down at start
        does not stop the gateway: it is tried again, sooner than the period."""
        while True:
            try:
                endpoints = await self.identities.catalog(site)
            except IdentityError as err:
                self.metrics.catalog_refreshes.labels(site, "error").inc()
                log.warning("catalog of %s: %s; trying again shortly", site, err)
                await asyncio.sleep(min(10.0, self.config.catalog_refresh))
                continue
            self.registry.learn(site, endpoints)
            self.metrics.catalog_refreshes.labels("*", "ok").inc()  # bounded: §7
            await asyncio.sleep(self.config.catalog_refresh)

    async def _probe_loop(self) -> None:
        """Probe the sites whose circuit is open, all at once (at most
        PROBES in flight): a silent site costs its probe a connect timeout,
        and must not delay the probe of a site that came back."""
        while True:
            await asyncio.sleep(self.config.circuit.probe_interval)
            sites = self.circuits.open_sites()
            if sites:
                limit = asyncio.Semaphore(PROBES)
                await asyncio.gather(*(self._probe(site, limit) for site in sites))

    async def _probe(self, site: str, limit: asyncio.Semaphore) -> None:
        url = self.registry.probe_url(site)
        if url is None:
            return
        try:
            async with limit:
                reply = await self.upstream.send("GET", url, (), None, self.registry.timeouts(site))
        except Failure:
            return
        reply.release()
        # A 502/503/504 is a proxy in front of the site (or the site itself)
        # saying it is not there: the same answer that opened the circuit
        # must not close it.
        if not status_counts(reply.status):
            self.circuits.record(site, True)

    async def handle(self, req: Request) -> Response:
        """Serve one request; every response carries ``X-Scope``."""
        applied = applied_scope(EMPTY, self.registry.local)
        started = time.perf_counter()
        answer: Answer | None = None
        node: Node | None = None
        try:
            hop = req.header(HOP_HEADER)
            if hop is not None:
                node, width = self._hop_node(hop, req), 1
                applied = req.header(SCOPE_HEADER) or applied
            else:
                scope, text = self._scope(req)
                node, applied, width = self._plan(scope, text, req.service)
                if text is not None:
                    # Whatever carried the scope here, it travels on complete,
                    # on the token, so every site (and the calls its services
                    # make with the token) reads the same scope.
                    req.carry(applied, scope)
            listing = None
            if not isinstance(node, Call):
                await self._prepare_body(req)
                if req.method == "GET":
                    listing = listing_of(req.service, req.query)
                    if listing.stored is not None:
                        listing = await self._stored(listing, listing.stored)
            self.metrics.fanout.observe(width)
            answer = await self.executor.run(node, req, listing)
            if req.scope is not None and any(r.status == 401 for r in answer.reports):
                identity = self._identity_site(req.scope)
                if identity is not None:
                    say_why_refused(answer, identity, self.registry.local)
            pending = Pending() if self.markers is not None and listing is not None else None
            resp = respond(answer, applied, req, listing, pending)
            if pending is not None and pending.items:
                resp = await self._keep(pending, resp, answer, applied, req, listing)
        except GatewayError as err:
            resp = error_response(err.status, err.message)
            resp.headers.append((REQUEST_ID, req.request_id))
            resp.headers.extend(scope_headers(applied, ()))
        except ClientDisconnected:
            # Nobody is left to read an answer; this one is for the log and
            # the metrics (499, as nginx counts it). The upstream call that
            # was sending the body was closed with its connection.
            message = "the client closed its connection before its request was sent whole"
            resp = error_response(499, message)
            resp.headers.append((REQUEST_ID, req.request_id))
        self.metrics.requests.inc(req.service, req.method, _STATUS_CLASS[resp.status // 100])
        if request_log.isEnabledFor(logging.INFO):
            _log_request(req, resp, applied, node, answer, started)
        return resp

    def _hop_node(self, hop: str, req: Request) -> Node:
        """A request another site forwarded: served here, never planned again,
        if it comes from a site (over HTTPS: its certificate says so, §4)."""
        parsed = parse_hop(hop)
        refused = hop_refusal(
            req.peer, parsed[0] if parsed else None, self.registry.names, self._check_hop
        )
        if refused is not None:
            raise GatewayError(403, refused)
        if parsed is None:
            raise GatewayError(400, f"the {HOP_HEADER} header must be ORIGIN>TARGET")
        _origin, target = parsed
        if target != self.registry.local:
            raise GatewayError(
                421,
                f"this request was sent for site {target!r}, but this is {self.registry.local!r}",
            )
        return Call(self.registry.local)

    def _scope(self, req: Request) -> tuple[Scope, str | None]:
        """The request's scope: ``X-Scope``, else a scoped URL, else the
        token suffix, else none."""
        text = req.header(SCOPE_HEADER)
        try:
            if text is None and req.url_scope is not None:
                text = decode_scope(req.url_scope)
            if text is None:
                text = _token_scope(req)
            if text is None:
                return EMPTY, None
            return parse(text), text
        except ScopeError as err:
            raise GatewayError(400, str(err)) from None

    def _identity_site(self, scope: Scope) -> str | None:
        """The one site the scope sends identity to, if it is not this one."""
        local = self.registry.local
        ident = plan_scope(scope, self.registry.names, local).for_service("identity")
        return ident.site if isinstance(ident, Call) and ident.site != local else None

    def _plan(self, scope: Scope, text: str | None, service: str) -> tuple[Node, str, int]:
        try:
            plan = plan_scope(scope, self.registry.names, self.registry.local, text)
        except ScopeError as err:
            raise GatewayError(400, str(err)) from None
        node = plan.for_service(service)
        assert node is not None  # the home site is always the default
        width = _width(node)
        if width > self.config.limits.max_fanout:
            raise GatewayError(
                400,
                f"the scope sends this request to {width} sites; this gateway allows "
                f"at most {self.config.limits.max_fanout} (limits: max_fanout in its config)",
            )
        return node, applied_scope(scope, self.registry.local), width

    async def _prepare_body(self, req: Request) -> None:
        """Hold a small body in memory so it can go to several sites; a
        larger one streams: to one site at a time through a ``|`` (failover
        stays possible until it starts), to every site at once through an
        ``&`` (scoped.tee)."""
        if not req.body.replayable:
            await req.body.buffer(self.config.limits.max_replay_bytes)

    def own_response(self, path: str, method: str) -> Response:
        """The gateway's own paths, for a request that maps to no service:
        ``/healthz`` (with each site's circuit: closed, open, half-open),
        ``/metrics``; anything else is a 404 that says what is
        served here. One answer for every front end."""
        if path == "/healthz" and method in ("GET", "HEAD"):
            # "ok" says this gateway serves; the other sites' circuits are
            # shown, never counted against it (a load balancer must not take
            # a gateway out because a remote site is down).
            sites = {
                name: self.circuits.state(name).name.lower().replace("_", "-")
                for name in self.registry.names
            }
            body = orjson.dumps({"status": "ok", "site": self.registry.local, "sites": sites})
            return Response(200, [("content-type", "application/json")], body)
        if path == DISCOVERY_PATH and method in ("GET", "HEAD"):
            # What this gateway knows, for clients to check a scope before
            # they send it (openstack scope explain, the plugin).
            doc = {
                "site": self.registry.local,
                "sites": list(self.registry.names),
                "services": self.registry.prefixes(),
                "scope_url": "/scope/{base64url of the scope}/{service path}",
            }
            return Response(200, [("content-type", "application/json")], orjson.dumps(doc))
        if path == "/metrics" and method == "GET":
            own = self.metrics
            text = own.render(
                None if self.share is None else self.share.merged_metrics(own.families())
            )
            return Response(200, [("content-type", METRICS_TYPE)], text)
        prefixes = ", ".join(sorted(self.registry.prefixes().values()))
        return error_response(
            404,
            f"no service at {path!r}; this gateway serves {prefixes}, /healthz, /metrics, "
            f"{DISCOVERY_PATH}",
        )

    async def _stored(self, listing: Listing, key: str) -> Listing:
        """The positions of a marker kept in the store (a wide fan-out's)."""
        store = self.markers
        if store is None:
            raise GatewayError(
                400,
                "the marker of this paging link (sc1~...) was kept in a marker store, and "
                "this gateway has none: expected paging.memcached in its config, as at the "
                "gateway that made the link",
            )
        try:
            raw = await store.get(key)
        except StoreError as err:
            raise GatewayError(
                503, f"the marker of this paging link could not be read ({err}); try again"
            ) from None
        if raw is None:
            raise GatewayError(
                400,
                f"this paging link has expired: its marker is no longer in {store.description} "
                f"(markers are kept {store.ttl} s, paging.ttl); list again from the first page",
            )
        if marker_key(raw) != key:
            raise GatewayError(400, "the marker is not one this gateway made (a composite marker)")
        return replace(listing, positions=positions_of(raw))

    async def _keep(
        self,
        pending: Pending,
        resp: Response,
        answer: Answer,
        applied: str,
        req: Request,
        listing: Listing | None,
    ) -> Response:
        """Keep the long markers ``resp`` links to before it is sent; if the
        store fails, the links carry them inline (long, but good)."""
        assert self.markers is not None
        try:
            await self.markers.put(pending.items)
        except StoreError as err:
            log.warning("paging: %s; this page's next link carries its marker inline", err)
            return respond(answer, applied, req, listing)
        return resp

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        await self.upstream.close()
        if self.markers is not None:
            await self.markers.close()
        if self.share is not None:
            with contextlib.suppress(OSError):  # its last counts, for the siblings' scrapes
                self.share.write_metrics(self.metrics.families())


def _log_request(
    req: Request,
    resp: Response,
    applied: str,
    node: Node | None,
    answer: Answer | None,
    started: float,
) -> None:
    """One structured line per request. Headers are never logged: no token
    can leak through here (docs/design.md §6)."""
    line = {
        "request_id": req.request_id,
        "method": req.method,
        "service": req.service,
        "path": req.path,
        "scope": applied,
        "plan": node_json(node) if node is not None else None,
        "sites": [
            {"site": r.site, "outcome": r.outcome, "ms": round(r.ms, 1)}
            for r in (answer.reports if answer is not None else ())
        ],
        "status": resp.status,
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    request_log.info("%s", orjson.dumps(line).decode())


def _token_scope(req: Request) -> str | None:
    # A token validation takes its scope from the token being validated: the
    # validating service's own token carries none (docs/design.md §4).
    if is_token_path(req):
        subject = req.header(SUBJECT_TOKEN)
        if subject is not None:
            found = scope_of_token(subject)
            if found is not None:
                return found
    token = req.header(AUTH_TOKEN)
    return scope_of_token(token) if token is not None else None


def _marker_store(config: Config) -> MarkerStore | None:
    paging = config.paging
    return MemcachedStore(paging.memcached, paging.ttl) if paging.memcached else None


def _federation(config: Config) -> Federation | None:
    """Keystone-to-Keystone exchanges for the sites configured ``federated``,
    from this site's Keystone: its ``identity`` backend, or (the WSGI filter,
    which has no backends) this site's own identity endpoint."""
    if not any(s.tokens.federated for n, s in config.sites.items() if n != config.site):
        return None
    identity = config.backends.get("identity") or config.local.endpoints.get("identity")
    if identity is None:
        raise ConfigError(
            f"{config.source}: backends.identity: expected this site's Keystone "
            "(sites with tokens.mode federated get their tokens from it)"
        )
    sites = config.sites.items()
    return Federation(
        config.site,
        f"{identity}/v3",
        {n: s.tokens for n, s in sites},
        {n: s.timeouts for n, s in sites},
        tls=config.tls,
    )


@lru_cache(maxsize=4096)
def applied_scope(scope: Scope, home: str) -> str:
    """The scope applied: the user's, completed with the home site for the rest."""
    if scope.default is not None:
        return canonical(scope)
    return canonical(Scope((*scope.entries, (STAR, Site(home)))))


@lru_cache(maxsize=4096)
def _width(node: Node) -> int:
    if isinstance(node, Call):
        return 1
    return sum(_width(c) for c in node.children)
