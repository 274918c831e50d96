"""One plan leaf: the request sent to one site and its answer made ready for
the plan.

The call is addressed (:mod:`scoped.forward`), sent through the per-site
policies (:mod:`scoped.policies`), observed (metrics), and its answer shaped
for what the plan does with it: read whole for a merge, a small body read at
once (one write to the client, its links pointed back here), a large one
left unread, to be streamed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol
from urllib.parse import urlsplit

from .answer import Answer, Shortfall, SiteReport, Verdict, verdict_of
from .config import Limits
from .errors import BodyTooLarge, CallError, Failure
from .forward import at_endpoint, upstream_headers
from .http import SMALL_BODY, Request, content_length, header
from .links import rewrite_links, rewrite_location
from .merge import decode_collection
from .metrics import Metrics
from .paging import Listing, site_query
from .policies import Send, SiteCall
from .sites import Registry
from .upstream import Reply
from .urlscope import rewrite_catalog, rewrite_remote_catalog

_JSON_TYPES = ("application/json", "application/problem+json")


def is_json(headers: Sequence[tuple[str, str]]) -> bool:
    ctype = header(headers, "content-type")
    return ctype is not None and _json_type(ctype)


@lru_cache(maxsize=256)
def _json_type(ctype: str) -> bool:
    """Whether a ``Content-Type`` value is JSON (the few values sites send,
    parsed once, not per site call)."""
    base = ctype.split(";", 1)[0].strip().lower()
    return base in _JSON_TYPES or base.endswith("+json")


LATENCY_WEIGHT = 0.25
"""The weight of a call's time in its site's moving average (:attr:`SiteCaller.latency`)."""

_STATUS_TEXT = {status: str(status) for status in range(100, 600)}
"""``str(status)`` of a site report, made once."""


def is_token_path(req: Request) -> bool:
    """Keystone's ``.../auth/tokens``: about the token in ``X-Subject-Token``."""
    return req.service == "identity" and req.path.rstrip("/").endswith("/auth/tokens")


def is_token_validation(req: Request) -> bool:
    """``GET``/``HEAD .../auth/tokens``: validates ``X-Subject-Token``."""
    return req.method in ("GET", "HEAD") and is_token_path(req)


class Head(Protocol):
    """An answer's status line and headers (a reply's, or a connection's)."""

    status: int
    headers: list[tuple[str, str]]


class SiteCaller:
    """Calls one site for a request, through the policy stack."""

    def __init__(self, registry: Registry, send: Send, limits: Limits, metrics: Metrics) -> None:
        self.registry = registry
        self.send = send
        self.limits = limits
        self.metrics = metrics
        self.latency: dict[str, float] = {}
        """Per site: how long its calls take, in ms (a moving average of the
        last few; one entry per site of the registry). A fan-out sends to
        the slowest sites first (:mod:`scoped.fanout`)."""

    def _observe(self, req: Request, report: SiteReport) -> SiteReport:
        m = self.metrics
        site, ms = report.site, report.ms
        m.upstream.inc(site, req.service, report.outcome)
        m.upstream_seconds.observe(ms / 1000, site)
        latency = self.latency
        known = latency.get(site)
        latency[site] = ms if known is None else known + (ms - known) * LATENCY_WEIGHT
        return report

    def failed(
        self, req: Request, site: str, err: Failure, ms: float, safe: bool = False
    ) -> Answer:
        """The answer of a call that got no answer (or an unreadable one)."""
        report = self._observe(req, SiteReport(site, err.outcome, ms, err.detail))
        return Answer(Verdict.FAILED, 502, reports=[report], site=site, safe=safe)

    async def __call__(
        self, site: str, req: Request, listing: Listing | None, merging: bool
    ) -> Answer:
        query = req.query if listing is None else site_query(req.query, listing, site)
        if query is None:  # this site has nothing more for this listing
            return Answer(Verdict.ABSENT, 404, site=site)
        registry = self.registry
        base = registry.endpoint(site, req.service)
        if base is None:
            detail = f"site {site!r} has no endpoint for service {req.service!r}"
            return self.failed(req, site, CallError(detail), 0.0, safe=True)
        url = at_endpoint(base, req, query)
        call = SiteCall(
            site,
            req.method,
            url,
            upstream_headers(req, registry, site, merging),
            req.body,
            registry.timeouts(site),
            validates_token=site != registry.local and is_token_validation(req),
        )
        start = time.perf_counter()
        try:
            reply = await self.send(call)
        except Failure as err:
            ms = (time.perf_counter() - start) * 1000
            return self.failed(req, site, err, ms, safe=not err.sent)
        return await self.answer(site, req, base, reply, start, merging)

    async def answer(
        self, site: str, req: Request, base: str, reply: Reply, start: float, merging: bool
    ) -> Answer:
        """The answer of a call to endpoint ``base`` whose reply (head) came
        (``start``: when it was sent): read whole for a merge, a small
        error body read, or left unread to be streamed."""
        answer, public = self._shaped(site, req, base, reply.status, reply.headers)
        answer.reply = reply
        if req.method == "HEAD":
            pass  # no body to read, merge or report
        elif merging and answer.verdict is Verdict.OK and is_json(reply.headers):
            try:
                body = await reply.read(self.limits.max_merge_bytes)
            except BodyTooLarge:
                return self._too_large(req, site, start)
            except Failure as err:
                ms = (time.perf_counter() - start) * 1000
                return self.failed(req, site, err, ms)
            answer.body = _relink(body, base, req, public)
            answer.reply = None
        elif merging and answer.verdict is not Verdict.OK:
            # Keep error bodies small and readable for the per-site report.
            try:
                answer.body = await reply.read(SMALL_BODY)
            except Failure:
                answer.body = None
            answer.reply = None
        return self._reported(answer, req, start)

    def whole_answer(
        self,
        site: str,
        req: Request,
        base: str,
        head: Head,
        chunks: list[bytes],
        start: float,
        listing: bool,
    ) -> Answer:
        """:meth:`answer` of a merging GET whose whole answer is here
        (``chunks``), JSON or not OK: no await (:mod:`scoped.fanout`). The
        page of a ``listing`` is decoded now, while other sites' answers are
        still to come, not after the last one (on the request's latency)."""
        answer, public = self._shaped(site, req, base, head.status, head.headers)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if answer.verdict is not Verdict.OK:
            answer.body = body if len(body) <= SMALL_BODY else None
        elif len(body) > self.limits.max_merge_bytes:
            return self._too_large(req, site, start)
        else:
            answer.body = _relink(body, base, req, public)
            if listing:
                answer.collection = decode_collection(site, answer.body)
        return self._reported(answer, req, start)

    def _shaped(
        self, site: str, req: Request, base: str, status: int, headers: list[tuple[str, str]]
    ) -> tuple[Answer, str | None]:
        """A site's answer as the plan sees it (its locations pointed back
        here), and the site's public endpoint for the service."""
        public = self.registry.public_endpoint(site, req.service)
        headers = _relocate(headers, base, req, public)
        answer = Answer(verdict_of(status), status, headers, site=site, safe=status in (404, 503))
        return answer, public

    def _reported(self, answer: Answer, req: Request, start: float) -> Answer:
        ms = (time.perf_counter() - start) * 1000
        status = answer.status
        outcome = _STATUS_TEXT.get(status) or str(status)
        site = answer.site or ""
        answer.reports = [self._observe(req, SiteReport(site, outcome, ms, status=status))]
        return answer

    def _too_large(self, req: Request, site: str, start: float) -> Answer:
        ms = (time.perf_counter() - start) * 1000
        limit = self.limits.max_merge_bytes
        detail = f"its answer is larger than the merge limit ({limit} bytes)"
        return self.failed(req, site, CallError(detail, sent=True), ms)

    async def inline_small_body(self, answer: Answer, req: Request) -> None:
        """Read a small body, or a JSON one, (by Content-Length) now: one write
        to the client instead of a stream, and its links can be rewritten."""
        reply = answer.reply
        assert reply is not None
        length = content_length(reply.headers)
        # JSON is read whole (up to the merge limit) so that its links are
        # rewritten at any size; anything else only when small.
        json_body = is_json(reply.headers)
        limit = self.limits.max_merge_bytes if json_body else SMALL_BODY
        if length is None or length > limit:
            return
        try:
            body = await reply.read(limit)
        except Failure as err:
            answer.verdict, answer.status = Verdict.FAILED, 502
            answer.headers = []
            answer.reply = None
            answer.shortfall = _broke_off(answer.site, err)
            return
        answer.reply = None
        if answer.site is not None and json_body:
            base = self.registry.endpoint(answer.site, req.service) or ""
            public = self.registry.public_endpoint(answer.site, req.service)
            body = _relink(body, base, req, public)
            if req.url_prefix and req.service == "identity":
                origin = req.entry_url[: req.entry_url.index(req.url_prefix)]
                body = rewrite_catalog(body, origin, req.url_prefix)
                if answer.site != self.registry.local:
                    # A token of another site's Keystone lists that site's
                    # endpoints: they too are reached through here.
                    body = rewrite_remote_catalog(
                        body, origin + req.url_prefix, self._routes(answer.site)
                    )
        answer.body = body

    def _routes(self, site: str) -> dict[str, tuple[str, str]]:
        """Per service this gateway serves: the path of ``site``'s entry URL
        for it, and this gateway's entry path for it."""
        registry = self.registry
        out: dict[str, tuple[str, str]] = {}
        for service, prefix in registry.prefixes().items():
            url = registry.endpoint(site, service)
            if url is not None:
                out[service] = (urlsplit(url).path.rstrip("/"), prefix)
        return out


def _unscoped_entry(req: Request) -> str:
    """This gateway's entry URL for the service without the scoped prefix."""
    return req.entry_url.replace(req.url_prefix, "", 1)


def _relink(body: bytes, base: str, req: Request, public: str | None = None) -> bytes:
    """Links to the site (at the address this gateway reaches it, or at its
    own public URL: a service that knows it writes them; and, through a
    scoped URL, links to this gateway that lack the scoped prefix) pointed at
    the entry URL the client used."""
    body = rewrite_links(body, base, req.entry_url, req.service)
    if public:
        body = rewrite_links(body, public, req.entry_url)
    if req.url_prefix:
        body = rewrite_links(body, _unscoped_entry(req), req.entry_url)
    return body


_LOCATIONS = frozenset({"location", "content-location"})


def _relocate(
    headers: list[tuple[str, str]], base: str, req: Request, public: str | None = None
) -> list[tuple[str, str]]:
    for name, _ in headers:
        if name in _LOCATIONS:
            break
    else:  # the usual answer: no header to rewrite, one pass over the names
        return headers  # (not three, per site call of a fan-out)
    headers = rewrite_location(headers, base, req.entry_url)
    if public:
        headers = rewrite_location(headers, public, req.entry_url)
    if req.url_prefix:
        headers = rewrite_location(headers, _unscoped_entry(req), req.entry_url)
    return headers


def _broke_off(site: str | None, err: Failure) -> Shortfall:
    return Shortfall(f"site {site!r} broke off its answer: {err}", outcomes=False)
