"""Plan evaluation: the operators of docs/design.md §3 over plan leaves.

``Call`` sends to one site (:class:`~scoped.calls.SiteCaller`, through the
per-site policies). ``First`` tries its children in order and returns the
first success; a non-idempotent request moves on only when the failed site
surely did not process it. ``All`` runs its children concurrently and merges
their answers; a child that fails fails the whole unless it is optional.
Every call made is reported, in plan order, for ``X-Scope-Sites``. A failed
node says why in a :class:`~scoped.answer.Shortfall`, worded by respond.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from .answer import Answer, Shortfall, SiteReport, Verdict
from .calls import SiteCaller, is_token_validation
from .fanout import FanOut
from .handles import HandleTooLong, has_handle
from .http import Request
from .merge import Collection, combine, decode_collection
from .paging import Listing
from .plan import All, Call, First, Node
from .policies import shortcut
from .writes import Replication, Writes, at_site, fold_replicas

Shape = Callable[[str], Request | Answer]
"""A site's own version of the request (or the answer that it has none)."""

READS = frozenset({"GET", "HEAD", "OPTIONS"})


class Executor:
    """Evaluates plans; a leaf is one :class:`SiteCaller` call."""

    def __init__(
        self, call_site: SiteCaller, on_failover: Callable[[str, str], None] | None = None
    ) -> None:
        self.call_site = call_site
        self.on_failover = on_failover
        registry = call_site.registry
        self.writes = Writes(self._read_at, registry.names, registry.local)
        self.shortcut = shortcut(call_site.send)
        """What lets a plain GET fan-out skip the policy stack's coroutines
        (:mod:`scoped.fanout`); None: the stack does not allow it."""

    async def _read_at(self, site: str, req: Request) -> Answer:
        return await self.call_site(site, req, None, merging=True)

    async def run(self, node: Node, req: Request, listing: Listing | None) -> Answer:
        """Run ``node`` for ``req``; a large body is left unread, to be streamed."""
        answer = await self._node(node, req, listing, merging=False)
        lone_failure = answer.reply is None and answer.body is None and answer.shortfall is None
        if answer.verdict is Verdict.FAILED and lone_failure:
            # A lone call that got no answer: say so in OpenStack's error shape.
            return _failed([answer], answer.reports, f"site {answer.site!r} failed")
        if answer.reply is not None and req.method != "HEAD":
            await self.call_site.inline_small_body(answer, req)
        return answer

    async def _node(
        self,
        node: Node,
        req: Request,
        listing: Listing | None,
        merging: bool,
        shape: Shape | None = None,
    ) -> Answer:
        if isinstance(node, Call):
            shaped = at_site(req, node.site) if shape is None else shape(node.site)
            if isinstance(shaped, Answer):
                return shaped
            return await self.call_site(node.site, shaped, listing, merging)
        if isinstance(node, First):
            return await self._first(node, req, listing, merging, shape)
        if shape is not None:
            return await self._fan_out(node, req, listing, shape)
        return await self._all(node, req, listing)

    async def _first(
        self,
        node: First,
        req: Request,
        listing: Listing | None,
        merging: bool,
        shape: Shape | None = None,
    ) -> Answer:
        reports: list[SiteReport] = []
        tried: list[Answer] = []
        stop_reason = ""
        previous: str | None = None
        for child in node.children:
            if req.body.started and not req.body.replayable:
                stop_reason = "the request body was already sent and cannot be sent again"
                break
            answer = await self._node(child, req, listing, merging, shape)
            reports.extend(answer.reports)
            if previous is not None and answer.site is not None and self.on_failover:
                self.on_failover(previous, answer.site)
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
        result = _failed(tried, reports, "every site of a failover (|) failed", stop_reason)
        if req.method in ("GET", "HEAD") and any(t.verdict is Verdict.ABSENT for t in tried):
            # Read: the sites that answered do not have it, the others could
            # not be asked. "Not found" is the best answer there is (a client
            # then looks it up by name, say); the message names the rest.
            result.status, result.verdict = 404, Verdict.ABSENT
        return result

    async def _all(self, node: All, req: Request, listing: Listing | None) -> Answer:
        if req.method not in READS:
            return await self._write(node, req)
        answers = await self._strict_reads(node, req, listing)
        return self._merge_all(node, req, listing, answers)

    async def _strict_reads(
        self, node: All, req: Request, listing: Listing | None
    ) -> list[Answer | None]:
        """Every child's answer (None: not awaited); once a required child has failed the
        whole read has, and the others are no longer awaited (cancelled,
        their connections closed): a strict ``*`` with one refused site
        answers at once, not after the slowest (or a silent) site. Only reads
        are cut short; a write is never left half-sent."""
        # A GET with no body may skip the policy stack's coroutines per site
        # (scoped.fanout); any other read's children go the usual way, each
        # its own task (FanOut with no shortcut).
        direct = (
            req.method == "GET"
            and req.body.data == b""
            and not has_handle(req.path)
            and not is_token_validation(req)
        )
        children = node.children
        fan = FanOut(
            self.call_site,
            self.shortcut if direct else None,
            req,
            listing,
            children,
            lambda i: self._child(children[i], req, listing),
        )
        return await fan.run()

    def _child(
        self, node: Node, req: Request, listing: Listing | None
    ) -> Coroutine[Any, Any, Answer]:
        """A child of a read ``&``: :meth:`_node`, merging, for any node."""
        if isinstance(node, Call):
            shaped = at_site(req, node.site)
            if isinstance(shaped, Request):
                return self.call_site(node.site, shaped, listing, True)
        return self._node(node, req, listing, merging=True)

    async def _fan_out(
        self, node: All, req: Request, listing: Listing | None, shape: Shape
    ) -> Answer:
        """An ``&`` nested in a ``|`` of an ``&`` write: its sites' requests
        are already shaped."""
        answers = await asyncio.gather(
            *(self._node(child, req, listing, True, shape) for child in node.children)
        )
        return self._merge_all(node, req, listing, answers)

    async def _write(self, node: All, req: Request) -> Answer:
        """An ``&`` write: prepared for each site, all or nothing."""
        rep = await self.writes.prepare(node, req)
        if rep.refused:
            return _refused(rep)
        answers = await asyncio.gather(
            *(self._branch(rep, i, child, req) for i, child in enumerate(node.children))
        )
        if rep.tee is not None:
            await rep.tee.close()
        reports = [r for a in answers for r in a.reports]
        ok, failed = [], []
        for child, answer in zip(node.children, answers, strict=True):
            if answer.verdict is Verdict.OK:
                ok.append(answer)
            elif not child.optional:
                if answer.verdict is Verdict.ABSENT and not answer.reports:
                    answer.reports = [SiteReport(answer.site or "?", "no-replica", 0.0)]
                    reports.extend(answer.reports)
                failed.append(answer)
        if failed or not ok:
            for a in answers:
                a.discard()
            what = "a fan-out (&) write failed at some sites"
            return await self._undone(req, rep, ok, failed or answers, reports, what)
        try:
            merged = self.writes.answer(req, ok)
        except HandleTooLong as err:
            # Done everywhere, but no handle could name it all: a create that
            # cannot be answered whole is not kept.
            what = f"the create could not be answered: {err}"
            return await self._undone(req, rep, ok, ok, reports, what)
        merged.reports = reports
        return merged

    async def _undone(
        self,
        req: Request,
        rep: Replication,
        done: list[Answer],
        failed: list[Answer],
        reports: list[SiteReport],
        what: str,
    ) -> Answer:
        """A failed ``&`` write: what was created undone, and the report."""
        undone, undo_reports = await self.writes.undo(req, rep, done)
        result = _failed(failed, reports + undo_reports, what, done=done)
        assert result.shortfall is not None
        result.shortfall = replace(result.shortfall, undone=tuple(undone))
        return result

    async def _branch(self, rep: Replication, i: int, child: Node, req: Request) -> Answer:
        try:
            return await self._node(child, req, None, True, rep.at(req, i))
        finally:
            if rep.tee is not None:
                rep.tee.detach(i)

    def _merge_all(
        self,
        node: All,
        req: Request,
        listing: Listing | None,
        answers: Sequence[Answer | None],
    ) -> Answer:
        reports = [r for a in answers if a is not None for r in a.reports]
        ok: list[Answer] = []
        failed: list[Answer] = []
        absent: list[Answer] = []
        for child, answer in zip(node.children, answers, strict=True):
            if answer is None:
                continue  # no longer needed: not awaited
            if answer.verdict is Verdict.OK:
                ok.append(answer)
            elif answer.verdict is Verdict.ABSENT:
                absent.append(answer)
            elif not child.optional:
                failed.append(answer)
        heard = [a for a in answers if a is not None]
        if failed:
            for a in heard:
                a.discard()
            done = ok + absent if req.method not in READS else []
            return _failed(failed, reports, "a fan-out (&) failed at some sites", done=done)
        if not ok and not absent:
            # Every site was optional, and none answered.
            return _failed(heard, reports, "every site of a fan-out (&) failed")
        if not ok:
            result = _failed(absent, reports, "no site has it")
            result.verdict = Verdict.ABSENT
            return result
        merged = _merge(req, listing, ok, self.writes)
        merged.reports = reports
        return merged


def _merge(req: Request, listing: Listing | None, ok: list[Answer], writes: Writes) -> Answer:
    """A listing's collections merged; otherwise (one resource at several
    sites) the leftmost answer, naming every replica."""
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
            fold_replicas(merged.collection, req.query)
            return merged
        for a in ok:
            a.collection = None  # decoded as it came (scoped.fanout): not a list after all
    if req.method == "GET":
        return writes.answer(req, ok)
    for a in ok[1:]:
        a.discard()
    return leftmost


def _refused(rep: Replication) -> Answer:
    """A write that some site would refuse: nothing was sent anywhere."""
    why = "; ".join(rep.refused.values())  # each reason names its site
    out = Answer(Verdict.REFUSED, 400)
    out.shortfall = Shortfall(f"nothing was written at any site: {why}", outcomes=False)
    return out


def _failed(
    failed: list[Answer],
    reports: list[SiteReport],
    what: str,
    why: str = "",
    done: Sequence[Answer] = (),
) -> Answer:
    """The failure of a node: its status, its reports, and why (to be worded)."""
    said_no = [a for a in failed if a.verdict in (Verdict.REFUSED, Verdict.ABSENT)]
    any_done = any(a.verdict is Verdict.OK for a in done)
    if said_no and len(said_no) == len(failed) and len({a.status for a in said_no}) == 1:
        # Every failed site said the same no (401, 404...) and nothing was
        # done: pass it on as it is, so clients react as they would.
        status = said_no[0].status if not any_done else 502
    elif failed and all(a.timed_out for a in failed):
        status = 504
    else:
        status = 502
    out = Answer(Verdict.FAILED, status, reports=reports)
    out.shortfall = Shortfall(what, why, tuple(done))
    return out
