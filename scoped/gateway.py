"""The gateway core: parse -> plan -> execute -> merge -> respond.

Framework-free: the ASGI app and the WSGI filter hand in a
:class:`~scoped.http.Request` and send back the :class:`~scoped.http.Response`.
"""

from __future__ import annotations

import random
import uuid
from functools import lru_cache

from scoped_grammar import STAR, Scope, ScopeError, Site, canonical, parse

from .carry import HOP_HEADER, parse_hop, scope_of_token
from .config import Config
from .errors import GatewayError
from .execute import Answer, Executor
from .http import Request, Response, error_response, header
from .metrics import Metrics
from .paging import listing_of
from .plan import All, Call, First, Node, plan_scope
from .respond import respond, scope_headers
from .sites import Registry
from .upstream import AiohttpUpstream, Failure, Upstream

REQUEST_ID = "x-openstack-request-id"
EMPTY = Scope()


class Gateway:
    """One site's gateway: sends each request where its scope says."""

    def __init__(self, config: Config, upstream: Upstream | None = None) -> None:
        self.config = config
        self.registry = Registry(config)
        self.upstream: Upstream = upstream or AiohttpUpstream(config.limits.max_concurrency)
        self.metrics = Metrics()
        self.executor = Executor(self.registry, self.upstream, config.limits, self.metrics)

    async def handle(self, req: Request) -> Response:
        """Serve one request; every response carries ``X-Scope``."""
        applied = f"<*: {self.registry.local}>"
        try:
            req = _with_request_id(req)
            hop = req.header(HOP_HEADER)
            if hop is not None:
                node: Node = self._hop_node(hop)
                applied = req.header("x-scope") or applied
            else:
                scope, text = self._scope(req)
                node, applied = self._plan(scope, text, req.service)
            listing = None
            if not isinstance(node, Call):
                await self._prepare_body(req, node)
                if req.method == "GET":
                    listing = listing_of(req.service, req.query)
            self.metrics.fanout.observe(_width(node))
            answer = await self.executor.run(node, req, listing)
            if answer.reply is not None and req.method != "HEAD":
                await _inline_small_body(answer)
            resp = respond(answer, applied, req, listing)
        except GatewayError as err:
            resp = error_response(err.status, err.message)
            resp.headers.extend(scope_headers(applied, ()))
        self.metrics.requests.labels(req.service, req.method, f"{resp.status // 100}xx").inc()
        return resp

    def _hop_node(self, hop: str) -> Node:
        parsed = parse_hop(hop)
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
        """The request's scope: ``X-Scope``, else the token suffix, else none."""
        text = req.header("x-scope")
        try:
            if text is None:
                text = _token_scope(req)
            if text is None:
                return EMPTY, None
            return parse(text), text
        except ScopeError as err:
            raise GatewayError(400, str(err)) from None

    def _plan(self, scope: Scope, text: str | None, service: str) -> tuple[Node, str]:
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
                f"at most {self.config.limits.max_fanout}",
            )
        return node, _applied(scope, self.registry.local)

    async def _prepare_body(self, req: Request, node: Node) -> None:
        """Hold a small body in memory so it can go to several sites."""
        if req.body.replayable:
            return
        limit = self.config.limits.max_replay_bytes
        if await req.body.buffer(limit):
            return
        if isinstance(node, All):
            raise GatewayError(
                413,
                f"a request sent to several sites (&) carries at most {limit} bytes of body",
            )
        # A First streams it: failover stays possible until the body starts.
        assert isinstance(node, First)

    async def close(self) -> None:
        close = getattr(self.upstream, "close", None)
        if close is not None:
            await close()


def _token_scope(req: Request) -> str | None:
    # A token validation takes its scope from the token being validated: the
    # validating service's own token carries none (DESIGN.md §4).
    if req.service == "identity" and req.path.rstrip("/").endswith("/auth/tokens"):
        subject = req.header("x-subject-token")
        if subject is not None:
            found = scope_of_token(subject)
            if found is not None:
                return found
    token = req.header("x-auth-token")
    return scope_of_token(token) if token is not None else None


def _with_request_id(req: Request) -> Request:
    if req.header(REQUEST_ID) is not None:
        return req
    # A v4 UUID from the process's PRNG: unique enough for log correlation,
    # without a getrandom() system call on every request.
    rid = uuid.UUID(int=random.getrandbits(128), version=4)
    headers = (*req.headers, (REQUEST_ID, f"req-{rid}"))
    return Request(req.method, req.service, req.path, req.query, headers, req.entry_url, req.body)


@lru_cache(maxsize=4096)
def _applied(scope: Scope, home: str) -> str:
    """The scope applied: the user's, completed with the home site for the rest."""
    if scope.default is not None:
        return canonical(scope)
    return canonical(Scope((*scope.entries, (STAR, Site(home)))))


INLINE_BODY = 64 * 1024
"""Upstream bodies up to this size (by Content-Length) are read and sent in
one piece: fewer writes and awaits than streaming them."""


async def _inline_small_body(answer: Answer) -> None:
    reply = answer.reply
    assert reply is not None
    length = header(reply.headers, "content-length")
    if length is None or not length.isdigit() or int(length) > INLINE_BODY:
        return
    try:
        answer.body = await reply.read(INLINE_BODY)
    except Failure as err:
        raise GatewayError(502, f"site {answer.site!r} broke off its answer: {err}") from None
    answer.reply = None


def _width(node: Node) -> int:
    if isinstance(node, Call):
        return 1
    return sum(_width(c) for c in node.children)
