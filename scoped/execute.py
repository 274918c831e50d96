"""Plan -> upstream calls, with the policies of DESIGN.md §3.

``Call`` sends to one site. ``First`` tries its children in order and returns
the first success; a non-idempotent request moves on only when the failed
site surely did not process it. ``All`` runs its children concurrently and
merges their answers; a child that fails fails the whole unless it is
optional. Every call made is reported, in plan order, for ``X-Scope-Sites``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .config import Limits
from .forward import upstream_headers, upstream_url
from .http import BodyTooLarge, Request, error_body, header
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


def _is_json(headers: Sequence[tuple[str, str]]) -> bool:
    ctype = header(headers, "content-type")
    if ctype is None:
        return False
    base = ctype.split(";", 1)[0].strip().lower()
    return base in _JSON_TYPES or base.endswith("+json")


class Executor:
    """Runs plans against the sites of a registry through an upstream client."""

    def __init__(
        self, registry: Registry, upstream: Upstream, limits: Limits, metrics: Metrics
    ) -> None:
        self.registry = registry
        self.upstream = upstream
        self.limits = limits
        self.metrics = metrics

    def _observe(self, req: Request, report: SiteReport) -> SiteReport:
        self.metrics.upstream.labels(report.site, req.service, report.outcome).inc()
        self.metrics.upstream_seconds.labels(report.site).observe(report.ms / 1000)
        return report

    async def run(self, node: Node, req: Request, listing: Listing | None) -> Answer:
        """Run ``node`` for ``req``; the answer's body is left unread when possible."""
        return await self._node(node, req, listing, merging=False)

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
            report = SiteReport(site, "error", 0.0, detail)
            return Answer(Verdict.FAILED, 502, reports=[report], site=site, safe=True)
        headers = upstream_headers(req, self.registry, site, merging)
        timeouts = self.registry.timeouts(site)
        start = time.perf_counter()
        try:
            reply = await self.upstream.send(req.method, url, headers, req.body.payload(), timeouts)
        except Failure as err:
            ms = (time.perf_counter() - start) * 1000
            report = self._observe(req, SiteReport(site, err.kind, ms, err.detail))
            return Answer(Verdict.FAILED, 502, reports=[report], site=site, safe=not err.sent)
        status = reply.status
        answer = Answer(_verdict(status), status, reply.headers, site=site, reply=reply)
        answer.safe = status in (404, 503)
        if req.method == "HEAD":
            pass  # no body to read, merge or report
        elif merging and answer.verdict is Verdict.OK and _is_json(reply.headers):
            try:
                answer.body = await reply.read(self.limits.max_merge_bytes)
                answer.reply = None
            except BodyTooLarge as err:
                ms = (time.perf_counter() - start) * 1000
                detail = f"its answer is larger than the merge limit ({err.limit} bytes)"
                answer = Answer(Verdict.FAILED, 502, site=site)
                answer.reports = [self._observe(req, SiteReport(site, "error", ms, detail))]
                return answer
            except Failure as err:
                ms = (time.perf_counter() - start) * 1000
                answer = Answer(Verdict.FAILED, 502, site=site)
                answer.reports = [self._observe(req, SiteReport(site, err.kind, ms, err.detail))]
                return answer
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
