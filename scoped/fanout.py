"""A read ``&`` (a ``*`` list) run: its children's answers as they come,
and the usual case without a task per site.

Every read ``&`` runs here (:meth:`scoped.execute.Executor._strict_reads`):
once a required child has failed, the others are no longer waited for
(cancelled, their connections closed), so a strict ``*`` with one refused
site answers at once. One callback per child settles it: O(sites), where a
loop of ``asyncio.wait(FIRST_COMPLETED)`` is O(sites^2) at 1000 sites.

The usual fan-out is a GET to sites whose circuits are closed, with no token
to exchange, each with an idle kept-alive connection in the pool. For those
sites the request heads are made in one synchronous pass (the header lines
every site shares rendered once), written on the kept connections, and each
connection calls :meth:`FanOut._answered` back once its answer is whole (or
failed): no task, no coroutine, no future per site; one future for the
whole request. The policy stack says when it would pass a call through
untouched (:class:`~scoped.policies.Shortcut`); the pool lends the kept
connection (:meth:`~scoped.upstream.HttpUpstream.begin`).

Anything else takes the usual path, a task per site through
:class:`~scoped.calls.SiteCaller` and the whole policy stack: a site with no
endpoint, a circuit not closed, a token to exchange, no idle connection, no
free slot, a kept connection the site closed before answering (sent again
on another, as the pool does), a large body (reading paused), an answer that
is not JSON (read as a reply). The answers are the usual path's, report for
report (tests/scoped/test_fanout.py runs both on the same sites).

``tests/bench/bench_scale.py --quick --sites 1000``, the gateway's CPU per
site call, least of 20 requests, in alternating runs against the code
before: 64 -> 50 and 51 -> 58 µs (this shared machine's noise); least of 30
under py-spy, 44 µs, where this module's own work and the connections'
callbacks replaced the tasks, coroutines and futures of a site call. The
floor beside it, the same exchanges with no gateway (bare_fanout.py), is
11-16 µs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from functools import lru_cache, partial
from typing import Any

from .answer import Answer, Verdict, verdict_of
from .calls import SiteCaller, is_json
from .carry import AUTH_TOKEN, HOP_HEADER, hop_value
from .circuit import status_counts
from .errors import CallError
from .forward import shared_headers
from .h1 import Connection
from .http import Request, header
from .paging import Listing, site_query
from .plan import Call, Node
from .policies import Shortcut
from .upstream import broken, header_lines, split_url

Slow = Callable[[int], Coroutine[Any, Any, Answer]]
"""The usual path for child ``i``."""


def _fails(answer: Answer) -> bool:
    return answer.verdict in (Verdict.FAILED, Verdict.REFUSED)


class FanOut:
    """One read ``&``: its children's answers, in order, as they come; once a
    required child has failed, the others are no longer waited for."""

    __slots__ = (
        "answers",
        "blocks",
        "caller",
        "children",
        "conns",
        "left",
        "listing",
        "loop",
        "req",
        "required",
        "settled",
        "shortcut",
        "slow",
        "tasks",
    )

    def __init__(
        self,
        caller: SiteCaller,
        shortcut: Shortcut | None,
        req: Request,
        listing: Listing | None,
        children: Sequence[Node],
        slow: Slow,
    ) -> None:
        self.caller = caller
        self.shortcut = shortcut
        self.req = req
        self.listing = listing
        self.children = children
        self.slow = slow
        self.loop = asyncio.get_running_loop()
        n = len(children)
        self.answers: list[Answer | None] = [None] * n
        self.required = [not c.optional for c in children]
        self.left = n
        self.settled: asyncio.Future[None] = self.loop.create_future()
        self.conns: dict[int, tuple[Connection, str, str, float]] = {}
        """Per child on a kept connection: the connection, the site, its
        endpoint, and when its request was written."""
        self.tasks: dict[int, asyncio.Task[Answer]] = {}
        """Per child on the usual path: its task."""
        self.blocks: dict[bool, tuple[bytes | None, bool]] = {}
        """Per local site or remote one: the shared header lines (None: one
        holds a line break, or is not Latin-1: the usual path says why),
        and whether they carry a token."""

    async def run(self) -> list[Answer | None]:
        """Every child's answer (None: not waited for)."""
        children = self.children
        for i in _farthest_first(children, self.caller.latency):
            child = children[i]
            if not isinstance(child, Call) or not self._send(i, child.site):
                self._spawn(i, self.slow(i))
        try:
            if self.left:
                await self.settled
        finally:  # done, or this request was cancelled: no call outlives it
            if self.conns and self.shortcut is not None:
                upstream = self.shortcut.upstream
                for conn, _, _, _ in self.conns.values():
                    upstream.end(conn).release()  # mid-exchange: closed
                self.conns.clear()
            pending = [t for t in self.tasks.values() if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        answers = self.answers
        for i, t in self.tasks.items():
            answers[i] = None if t.cancelled() else t.result()
        return answers

    # -- the synchronous pass -------------------------------------------------

    def _send(self, i: int, site: str) -> bool:
        """Site ``i``'s request sent on a kept connection (or its answer
        known at once); False: it takes the usual path (always, without a
        shortcut: a read that is not a plain GET, or a stack that gives none)."""
        shortcut = self.shortcut
        if shortcut is None:
            return False
        req = self.req
        query = req.query if self.listing is None else site_query(req.query, self.listing, site)
        if query is None:  # this site has nothing more for this listing
            self._done(i, Answer(Verdict.ABSENT, 404, site=site))
            return True
        registry = self.caller.registry
        base = registry.endpoint(site, req.service)
        if base is None:
            return False
        local = site == registry.local
        block = self.blocks.get(local)
        if block is None:
            block = self.blocks[local] = _block(shared_headers(req, registry, site, True))
        lines, token = block
        if lines is None or not shortcut.passes(site, token):
            return False
        where = _target(base, req.path)
        if where is None:
            return False
        key, path = where
        if not local:
            lines += f"{HOP_HEADER}: {hop_value(registry.local, site)}\r\n\r\n".encode("latin-1")
        else:
            lines += b"\r\n"
        target = f"{path}?{query}" if query else path
        conn = shortcut.upstream.begin(
            key, target, lines, registry.timeouts(site), self._answered, i
        )
        if conn is None:
            return False
        self.conns[i] = (conn, site, base, time.perf_counter())
        return True

    # -- callbacks ------------------------------------------------------------

    def _answered(self, conn: Connection) -> None:
        found = self.conns.pop(conn.tag, None)
        if found is None:
            return
        i = conn.tag
        _, site, base, sent = found
        shortcut = self.shortcut
        assert shortcut is not None  # only a shortcut's calls have a connection here
        reply = shortcut.upstream.end(conn)
        caller, req = self.caller, self.req
        err = conn.error
        if err is not None:
            reply.release()
            if not err.answered and not err.timed_out:
                # A kept connection the site closed while it was idle: sent
                # again through the stack, on another connection, as the
                # pool does for a request that is safe to repeat.
                self._spawn(i, self.slow(i))
                return
            failure = broken(err)
            shortcut.settled(site, not failure.counts)
            ms = (time.perf_counter() - sent) * 1000
            self._done(i, caller.failed(req, site, failure, ms, safe=not failure.sent))
            return
        status = conn.status
        shortcut.settled(site, not status_counts(status))
        if conn.complete and (verdict_of(status) is not Verdict.OK or is_json(conn.headers)):
            chunks = conn.take_whole()
            if chunks is not None:
                reply.release()
                listing = self.listing is not None
                answer = caller.whole_answer(site, req, base, conn, chunks, sent, listing)
                self._done(i, answer)
                return
        # Paused (a large body) or not JSON: read as the usual path reads a reply.
        self._spawn(i, caller.answer(site, req, base, reply, sent, merging=True))

    def _spawn(self, i: int, coro: Coroutine[Any, Any, Answer]) -> None:
        task = self.loop.create_task(coro)
        self.tasks[i] = task
        task.add_done_callback(partial(self._task_done, i))

    def _task_done(self, i: int, task: asyncio.Task[Answer]) -> None:
        failed = not task.cancelled() and task.exception() is None and _fails(task.result())
        self._settle(i, failed)

    def _done(self, i: int, answer: Answer) -> None:
        self.answers[i] = answer
        self._settle(i, _fails(answer))

    def _settle(self, i: int, failed: bool) -> None:
        self.left -= 1
        if not self.settled.done() and (self.left == 0 or (failed and self.required[i])):
            self.settled.set_result(None)


def _farthest_first(children: Sequence[Node], latency: dict[str, float]) -> list[int]:
    """The children's indexes, the sites known to take longest first: their
    requests leave first, and the last answer comes sooner. Each site's
    answer takes its own time after its request is written, and writing a
    thousand takes milliseconds of their own: in plan order, a slow site at
    the end of the plan answers that much later (sites 10-150 ms away, 1000
    of them: see the README's "A thousand sites" table). Equal times keep
    plan order; a site not called yet counts as the fastest."""
    n = len(children)
    if not latency:
        return list(range(n))
    times = [latency.get(c.site, 0.0) if isinstance(c, Call) else 0.0 for c in children]
    return sorted(range(n), key=times.__getitem__, reverse=True)


@lru_cache(maxsize=8192)
def _target(base: str, path: str) -> tuple[str, str] | None:
    """The pool's origin key of endpoint ``base`` and ``path`` there (None:
    the usual path says what is wrong with it); the same few paths at every
    site, split once."""
    try:
        return split_url(f"{base}{path}")
    except CallError:
        return None


def _block(headers: list[tuple[str, str]]) -> tuple[bytes | None, bool]:
    """The header lines shared by every site (None if the usual path would
    refuse them, saying why), and whether they carry a token."""
    token = header(headers, AUTH_TOKEN) is not None
    try:
        return header_lines([f"{k}: {v}" for k, v in headers]), token
    except CallError:
        return None, token
