"""Plan -> upstream calls, with the policies of DESIGN.md §3.

``Call`` sends to one site. ``First`` tries its children in order and returns
the first success; a non-idempotent request moves on only when the failed
site surely did not process it. ``All`` runs its children concurrently and
merges their answers; a child that fails fails the whole unless it is
optional. Every call made is reported, in plan order, for ``X-Scope-Sites``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from .circuit import Circuits, counts_as_failure
from .config import Limits, Retries
from .forward import rewrite_links, rewrite_location, upstream_headers, upstream_url
from .http import BodyTooLarge, Request, content_length, error_body, header
from .identity import Identities, IdentityError
from .merge import Collection, combine, created_ids, decode_collection
from .metrics import Metrics
from .paging import Listing, site_query
from .plan import All, Call, First, Node
from .sites import Registry
from .upstream import Failure, Reply, Upstream


class Verdict(Enum):
    OK = "ok"
    ABSENT = "absent"
    """404: "that site doesn't have it"."""
    REFUSED = "refused"
    """Another 4xx: the site answered, and said no."""
    FAILED = "failed"
    """No answer, a 5xx, or an answer that could not be used."""


@dataclass(frozen=True, slots=True)
class SiteReport:
    """One site tried: ``SITE=OUTCOME;t=MILLISECONDS`` in ``X-Scope-Sites``."""

    site: str
    outcome: str
    ms: float
    detail: str = ""

    def entry(self) -> str:
        return f"{self.site}={self.outcome};t={self.ms:.1f}"


@dataclass
class Answer:
    """The result of running a plan node."""

    verdict: Verdict
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    reports: list[SiteReport] = field(default_factory=list)
    site: str | None = None
    reply: Reply | None = None
    """An upstream answer whose body is still unread (streamed to the client)."""
    body: bytes | None = None
    collection: Collection | None = None
    safe: bool = False
    """The site surely did not process the request (failover is allowed)."""

    def discard(self) -> None:
        if self.reply is not None:
            self.reply.release()
            self.reply = None


_JSON_TYPES = ("application/json", "application/problem+json")

INLINE_BODY = 64 * 1024
"""Upstream bodies up to this size (by Content-Length) are read and sent in
one piece: fewer writes and awaits than streaming them."""

_RETRYABLE = frozenset({"refused"})


def _retryable(req: Request, err: Failure) -> bool:
    """A refused connection of an idempotent request: the site surely did
    nothing, and a restarting service may accept the next one. A connect
    timeout is not retried: on a cut WAN link that would only double the
    wait before a ``|`` fails over."""
    return req.idempotent and not err.sent and err.kind in _RETRYABLE


def _is_json(headers: Sequence[tuple[str, str]]) -> bool:
    ctype = header(headers, "content-type")
    if ctype is None:
        return False
    base = ctype.split(";", 1)[0].strip().lower()
    return base in _JSON_TYPES or base.endswith("+json")


class Executor:
    """Runs plans against the sites of a registry through an upstream client."""

    def __init__(
        self,
        registry: Registry,
        upstream: Upstream,
        limits: Limits,
        metrics: Metrics,
        circuits: Circuits,
        retries: Retries,
        identities: Identities | None = None,
    ) -> None:
        self.registry = registry
        self.upstream = upstream
        self.limits = limits
        self.metrics = metrics
        self.circuits = circuits
        self.retries = retries
        self.identities = identities

    def _observe(self, req: Request, report: SiteReport) -> SiteReport:
        m = self.metrics
        m.upstream.inc(report.site, req.service, report.outcome)
        m.upstream_seconds.observe(report.ms / 1000, report.site)
        return report

    async def run(self, node: Node, req: Request, listing: Listing | None) -> Answer:
        """Run ``node`` for ``req``; a large body is left unread, to be streamed."""
        answer = await self._node(node, req, listing, merging=False)
        if answer.verdict is Verdict.FAILED and answer.reply is None and answer.body is None:
            # A lone call that got no answer: say so in OpenStack's error shape.
            return _failed([answer], answer.reports, f"site {answer.site!r} failed", "")
        if answer.reply is not None and req.method != "HEAD":
            await self._inline_small_body(answer, req)
        return answer

    async def _inline_small_body(self, answer: Answer, req: Request) -> None:
        """Read a small body (by Content-Length) now: one write to the client
        instead of a stream, and its links can be rewritten."""
        reply = answer.reply
        assert reply is not None
        length = content_length(reply.headers)
        if length is None or length > INLINE_BODY:
            return
        try:
            body = await reply.read(INLINE_BODY)
        except Failure as err:
            answer.verdict, answer.status = Verdict.FAILED, 502
            answer.headers = [("content-type", "application/json")]
            answer.body = error_body(502, f"site {answer.site!r} broke off its answer: {err}")
            answer.reply = None
            return
        answer.reply = None
        if answer.site is not None and _is_json(reply.headers):
            base = self.registry.endpoint(answer.site, req.service) or ""
            body = rewrite_links(body, base, req.entry_url)
        answer.body = body

    async def _node(
        self, node: Node, req: Request, listing: Listing | None, merging: bool
    ) -> Answer:
        if isinstance(node, Call):
            return await self._call(node.site, req, listing, merging)
        if isinstance(node, First):
            return await self._first(node, req, listing, merging)
        return await self._all(node, req, listing)

    async def _call(
        self, site: str, req: Request, listing: Listing | None, merging: bool
    ) -> Answer:
        query = req.query if listing is None else site_query(req.query, listing, site)
        if query is None:  # this site has nothing more for this listing
            return Answer(Verdict.ABSENT, 404, site=site)
        url = upstream_url(req, self.registry, site, query)
        if url is None:
            detail = f"site {site!r} has no endpoint for service {req.service!r}"
            return self._failed_call(req, site, "error", 0.0, detail, safe=True)
        if not self.circuits.allow(site):
            detail = "skipped: its circuit is open (it failed recently)"
            return self._failed_call(req, site, "skipped", 0.0, detail, safe=True)
        headers = upstream_headers(req, self.registry, site, merging)
        start = time.perf_counter()
        try:
            if self._validates_elsewhere(req, site):
                reply = await self._validate_with_service_token(req, url, headers, site)
            else:
                reply = await self._send(req, url, headers, site)
        except Failure as err:
            ms = (time.perf_counter() - start) * 1000
            self.circuits.record(site, not counts_as_failure(err.kind))
            return self._failed_call(req, site, err.kind, ms, err.detail, safe=not err.sent)
        status = reply.status
        self.circuits.record(site, not counts_as_failure(str(status)))
        base = self.registry.endpoint(site, req.service) or ""
        answer = Answer(
            _verdict(status),
            status,
            rewrite_location(reply.headers, base, req.entry_url),
            site=site,
            reply=reply,
        )
        answer.safe = status in (404, 503)
        if req.method == "HEAD":
            pass  # no body to read, merge or report
        elif merging and answer.verdict is Verdict.OK and _is_json(reply.headers):
            try:
                body = await reply.read(self.limits.max_merge_bytes)
            except BodyTooLarge as err:
                ms = (time.perf_counter() - start) * 1000
                detail = f"its answer is larger than the merge limit ({err.limit} bytes)"
                return self._failed_call(req, site, "error", ms, detail)
            except Failure as err:
                ms = (time.perf_counter() - start) * 1000
                return self._failed_call(req, site, err.kind, ms, err.detail)
            answer.body = rewrite_links(body, base, req.entry_url)
            answer.reply = None
        elif merging and answer.verdict is not Verdict.OK:
            # Keep error bodies small and readable for the per-site report.
            try:
                answer.body = await reply.read(64 * 1024)
            except (BodyTooLarge, Failure):
                answer.body = None
            answer.reply = None
        ms = (time.perf_counter() - start) * 1000
        answer.reports = [self._observe(req, SiteReport(site, str(status), ms))]
        return answer

    def _failed_call(
        self, req: Request, site: str, kind: str, ms: float, detail: str, safe: bool = False
    ) -> Answer:
        report = self._observe(req, SiteReport(site, kind, ms, detail))
        return Answer(Verdict.FAILED, 502, reports=[report], site=site, safe=safe)

    async def _send(
        self, req: Request, url: str, headers: list[tuple[str, str]], site: str
    ) -> Reply:
        """One upstream call; an idempotent request is retried after a failure
        to connect (bounded tries, jittered backoff, within the total timeout)."""
        timeouts = self.registry.timeouts(site)
        try:
            # The first try outside tenacity: the common case pays nothing for it.
            return await self.upstream.send(req.method, url, headers, req.body.payload(), timeouts)
        except Failure as err:
            if self.retries.attempts < 2 or not _retryable(req, err):
                raise
        backoff = self.retries.backoff
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries.attempts - 1) | stop_after_delay(timeouts.total),
            wait=wait_random_exponential(multiplier=backoff, max=backoff * 8),
            retry=retry_if_exception(lambda e: isinstance(e, Failure) and _retryable(req, e)),
            reraise=True,
        )
        await asyncio.sleep(random.uniform(0, backoff))
        async for attempt in retrying:
            with attempt:
                if not self.circuits.allow(site):
                    raise Failure("skipped", False, "its circuit opened while retrying")
                return await self.upstream.send(
                    req.method, url, headers, req.body.payload(), timeouts
                )
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _validates_elsewhere(self, req: Request, site: str) -> bool:
        """A token validation sent to another site's Keystone (DESIGN.md §4)."""
        return (
            req.service == "identity"
            and site != self.registry.local
            and req.method in ("GET", "HEAD")
            and req.path.rstrip("/").endswith("/auth/tokens")
            and self.identities is not None
            and self.identities.has(site)
        )

    async def _validate_with_service_token(
        self, req: Request, url: str, headers: list[tuple[str, str]], site: str
    ) -> Reply:
        """Validate at ``site`` with this gateway's service token there: the
        validating service's own token comes from its local Keystone, which
        ``site`` does not know. Renewed once on a 401."""
        assert self.identities is not None
        for attempt in (1, 2):
            try:
                token = await self.identities.service_token(site)
            except IdentityError as err:
                raise Failure("error", False, str(err)) from None
            swapped = [(k, v) for k, v in headers if k != "x-auth-token"]
            swapped.append(("x-auth-token", token))
            reply = await self._send(req, url, swapped, site)
            if reply.status != 401 or attempt == 2:
                return reply
            reply.release()
            self.identities.invalidate(site)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _first(
        self, node: First, req: Request, listing: Listing | None, merging: bool
    ) -> Answer:
        reports: list[SiteReport] = []
        tried: list[Answer] = []
        stop_reason = ""
        previous: str | None = None
        for child in node.children:
            if req.body.started and not req.body.replayable:
                stop_reason = "the request body was already sent and cannot be sent again"
                break
            answer = await self._node(child, req, listing, merging)
            reports.extend(answer.reports)
            if previous is not None and answer.site is not None:
                self.metrics.failovers.labels(previous, answer.site).inc()
            if answer.verdict in (Verdict.OK, Verdict.REFUSED):
                answer.reports = reports
                for t in tried:
                    t.discard()
                return answer
            tried.append(answer)
            answer.discard()
            previous = answer.site
            if not req.idempotent and not answer.safe:
                stop_reason = (
                    f"{req.method} is not idempotent and the site may have processed it; "
                    "not retried elsewhere"
                )
                break
        return _failed(tried, reports, "every site of a failover (|) failed", stop_reason)

    async def _all(self, node: All, req: Request, listing: Listing | None) -> Answer:
        answers = await asyncio.gather(
            *(self._node(child, req, listing, merging=True) for child in node.children)
        )
        reports = [r for a in answers for r in a.reports]
        ok: list[Answer] = []
        failed: list[Answer] = []
        absent: list[Answer] = []
        for child, answer in zip(node.children, answers, strict=True):
            if answer.verdict is Verdict.OK:
                ok.append(answer)
            elif answer.verdict is Verdict.ABSENT:
                absent.append(answer)
            elif not child.optional:
                failed.append(answer)
        if failed:
            for a in answers:
                a.discard()
            done = ok + absent if req.method not in ("GET", "HEAD") else None
            return _failed(failed, reports, "a fan-out (&) failed at some sites", "", done=done)
        if not ok:
            result = _failed(absent, reports, "no site has it", "")
            result.verdict = Verdict.ABSENT
            return result
        merged = self._merge(req, listing, ok)
        merged.reports = reports
        return merged

    def _merge(self, req: Request, listing: Listing | None, ok: list[Answer]) -> Answer:
        leftmost = ok[0]
        if req.method == "GET" and listing is not None:
            parts: list[Collection] = []
            for a in ok:
                coll = a.collection
                if coll is None and a.body is not None and a.site is not None:
                    coll = decode_collection(a.site, a.body)
                if coll is None:
                    break
                parts.append(coll)
            else:
                for a in ok:
                    a.discard()
                merged = Answer(Verdict.OK, 200, leftmost.headers, site=leftmost.site)
                merged.collection = combine(listing, parts)
                return merged
        # One resource, or a write done everywhere: the leftmost answer.
        for a in ok[1:]:
            a.discard()
        return leftmost


def _verdict(status: int) -> Verdict:
    if status < 400:
        return Verdict.OK
    if status == 404:
        return Verdict.ABSENT
    if status < 500:
        return Verdict.REFUSED
    return Verdict.FAILED


def _failed(
    failed: list[Answer],
    reports: list[SiteReport],
    what: str,
    why: str,
    done: list[Answer] | None = None,
) -> Answer:
    """An error answer that says what each site did."""
    said_no = [a for a in failed if a.verdict in (Verdict.REFUSED, Verdict.ABSENT)]
    any_done = any(a.verdict is Verdict.OK for a in done or ())
    if said_no and len(said_no) == len(failed) and len({a.status for a in said_no}) == 1:
        # Every failed site said the same no (401, 404...) and nothing was
        # done: pass it on as it is, so clients react as they would.
        status = said_no[0].status if not any_done else 502
    elif failed and all(_timed_out(a) for a in failed):
        status = 504
    else:
        status = 502
    sites = [_site_entry(r) for r in reports]
    for a in done or ():
        created = created_ids(a.body)
        if created is not None:
            for entry in sites:
                if entry["site"] == a.site:
                    entry["id"] = created
    outcomes = ", ".join(
        f"{r.site}: {r.outcome}" + (f" ({r.detail})" if r.detail else "") for r in reports
    )
    message = f"{what}: {outcomes}" if outcomes else what
    if why:
        message += f"; {why}"
    if done:
        kept = ", ".join(a.site or "?" for a in done if a.verdict is Verdict.OK)
        if kept:
            message += f"; done at {kept}, kept (nothing was undone)"
    answer = Answer(Verdict.FAILED, status, [("content-type", "application/json")])
    answer.body = error_body(status, message, sites=sites)
    answer.reports = reports
    return answer


def _timed_out(a: Answer) -> bool:
    return bool(a.reports) and a.reports[-1].outcome == "timeout"


def _site_entry(r: SiteReport) -> dict[str, Any]:
    entry: dict[str, Any] = {"site": r.site, "outcome": r.outcome, "ms": round(r.ms, 1)}
    if r.outcome.isdigit():
        entry["status"] = int(r.outcome)
    if r.detail:
        entry["detail"] = r.detail
    return entry
