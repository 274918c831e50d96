"""Answer -> the response the client gets: body, ``X-Scope``, ``X-Scope-Sites``,
and the wording of every error the plan's evaluation ran into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from .answer import Answer, Shortfall, SiteReport, Verdict
from .carry import SCOPE_HEADER, SITES_HEADER
from .http import HOP_BY_HOP, REQUEST_ID, Request, Response, error_body
from .markers import Pending
from .merge import created_ids, render
from .paging import Listing

_DROP_WHEN_REWRITTEN = frozenset({"content-length", "content-encoding", "etag", "content-md5"})
_OURS = frozenset({SCOPE_HEADER, SITES_HEADER})


LISTED = 64
"""Beyond this many sites tried, ``X-Scope-Sites`` and error bodies name the
sites that did not succeed (at most this many) and count the rest by
outcome: bounded answers at any width (a 1000-site ``*`` gave an 18 KB
header, past what proxies take). Every site is in the request log."""


def _succeeded(r: SiteReport) -> bool:
    return r.status is not None and r.status < 400


def sites_header(reports: Sequence[SiteReport]) -> str:
    """``SITE=OUTCOME;t=MS, ...``; past :data:`LISTED` sites, the sites that
    did not succeed, then ``*=OUTCOME;n=COUNT;t=SLOWEST`` per outcome for the
    rest (``*`` is never a site's name)."""
    if len(reports) <= LISTED:
        return ", ".join(r.entry() for r in reports)
    named = [r for r in reports if not _succeeded(r)][:LISTED]
    shown = {id(r) for r in named}
    counts: dict[str, list[float]] = {}
    for r in reports:
        if id(r) not in shown:
            counts.setdefault(r.outcome, []).append(r.ms)
    rest = [f"*={o};n={len(ms)};t={max(ms):.1f}" for o, ms in counts.items()]
    return ", ".join([*(r.entry() for r in named), *rest])


def scope_headers(applied: str, reports: Sequence[SiteReport]) -> list[tuple[str, str]]:
    out = [(SCOPE_HEADER, applied)]
    if reports:
        out.append((SITES_HEADER, sites_header(reports)))
    return out


def respond(
    answer: Answer,
    applied: str,
    req: Request,
    listing: Listing | None,
    pending: Pending | None = None,
) -> Response:
    """The client's response; a streamed upstream body stays streamed. A
    marker too long for a link goes into ``pending``, to be kept before the
    response is sent (scoped/markers.py); without it, markers stay inline."""
    extra = scope_headers(applied, answer.reports)
    if answer.shortfall is not None:
        body = shortfall_body(answer.status, answer.shortfall, answer.reports)
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            (REQUEST_ID, req.request_id),
        ]
        return Response(answer.status, headers + extra, body)
    if answer.collection is not None and listing is not None:
        body = render(
            answer.collection,
            listing,
            service=req.service,
            entry_url=req.entry_url,
            path=req.path,
            query=req.query,
            keep=pending.keep if pending is not None else None,
        )
        headers = _clean(answer.headers, _DROP_WHEN_REWRITTEN)
        headers.append(("content-length", str(len(body))))
        return Response(answer.status, headers + extra, body)
    if answer.reply is not None:
        reply = answer.reply
        return Response(
            answer.status, _clean(answer.headers) + extra, reply.stream(), close=reply.release
        )
    body = answer.body or b""
    headers = _clean(answer.headers, frozenset({"content-length"}))
    headers.append(("content-length", str(len(body))))
    return Response(answer.status, headers + extra, body)


def say_why_refused(answer: Answer, identity: str, local: str) -> None:
    """A 401 because the scope sent the token's validation to ``identity``,
    whose Keystone does not know a token issued at ``local``: say so, in the
    single answer's message or in the ``&`` report, instead of a bare
    "requires authentication"."""
    hint = (
        f"the scope sends identity to {identity}, so the token was validated by "
        f"{identity}'s Keystone, which does not know tokens issued at {local}; "
        f"to keep identity at {local}, add 'identity: {local}' to the scope"
    )
    if answer.shortfall is not None:
        why = f"{answer.shortfall.why}; {hint}" if answer.shortfall.why else hint
        answer.shortfall = replace(answer.shortfall, why=why)
        return
    if answer.status != 401:
        return
    try:
        data = orjson.loads(answer.body or b"")
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    said = error.get("message") if isinstance(error, dict) else None
    answer.discard()  # an unread body: replaced
    answer.body = error_body(401, f"{said} ({hint})" if isinstance(said, str) else hint)
    answer.headers = [(k, v) for k, v in answer.headers if k != "content-type"]
    answer.headers.append(("content-type", "application/json"))


def shortfall_body(status: int, why: Shortfall, reports: Sequence[SiteReport]) -> bytes:
    """An error body in OpenStack's shape that says what each site did, and
    which sites kept a write that was done there. Past :data:`LISTED` sites
    it names the sites that did not succeed and counts the others."""
    if not why.outcomes:
        return error_body(status, why.what)
    wide = len(reports) > LISTED
    shown = [r for r in reports if not _succeeded(r)][:LISTED] if wide else list(reports)
    sites = [_site_entry(r) for r in shown]
    for a in why.done:
        created = created_ids(a.body)
        if created is not None:
            for entry in sites:
                if entry["site"] == a.site:
                    entry["id"] = created
    outcomes = ", ".join(
        f"{r.site}: {r.outcome}" + (f" ({r.detail})" if r.detail else "") for r in shown
    )
    extra: dict[str, Any] = {}
    if wide:
        counts: dict[str, int] = {}
        for r in reports:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        extra["counts"] = counts
        failed = sum(1 for r in reports if not _succeeded(r))
        if failed > len(shown):
            outcomes += f" and {failed - len(shown)} more"
        outcomes += f" ({len(reports) - failed} of {len(reports)} sites succeeded)"
    message = f"{why.what}: {outcomes}" if outcomes else why.what
    if why.why:
        message += f"; {why.why}"
    kept = _names(
        [a.site or "?" for a in why.done if a.verdict is Verdict.OK and a.site not in why.undone]
    )
    if why.undone:
        message += f"; done at {_names(why.undone)}, then undone (deleted)"
        for entry in sites:
            if entry["site"] in why.undone:
                entry["undone"] = True
    if kept:
        message += f"; done at {kept}, kept" + ("" if why.undone else " (nothing was undone)")
    return error_body(status, message, sites=sites, **extra)


def _names(sites: Sequence[str]) -> str:
    if len(sites) <= LISTED:
        return ", ".join(sites)
    return ", ".join(sites[:LISTED]) + f" and {len(sites) - LISTED} more"


def _site_entry(r: SiteReport) -> dict[str, Any]:
    entry: dict[str, Any] = {"site": r.site, "outcome": r.outcome, "ms": round(r.ms, 1)}
    if r.status is not None:
        entry["status"] = r.status
    if r.detail:
        entry["detail"] = r.detail
    return entry


def _clean(
    headers: Sequence[tuple[str, str]], drop: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP and k not in drop and k not in _OURS]
