"""Answer -> the response the client gets: body, ``X-Scope``, ``X-Scope-Sites``,
and the wording of every error the plan's evaluation ran into."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .answer import Answer, Shortfall, SiteReport, Verdict
from .carry import SCOPE_HEADER, SITES_HEADER
from .http import HOP_BY_HOP, REQUEST_ID, Request, Response, error_body
from .merge import created_ids, render
from .paging import Listing

_DROP_WHEN_REWRITTEN = frozenset({"content-length", "content-encoding", "etag", "content-md5"})
_OURS = frozenset({SCOPE_HEADER, SITES_HEADER})


def scope_headers(applied: str, reports: Sequence[SiteReport]) -> list[tuple[str, str]]:
    out = [(SCOPE_HEADER, applied)]
    if reports:
        out.append((SITES_HEADER, ", ".join(r.entry() for r in reports)))
    return out


def respond(answer: Answer, applied: str, req: Request, listing: Listing | None) -> Response:
    """The client's response; a streamed upstream body stays streamed."""
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


def shortfall_body(status: int, why: Shortfall, reports: Sequence[SiteReport]) -> bytes:
    """An error body in OpenStack's shape that says what each site did, and
    which sites kept a write that was done there."""
    if not why.outcomes:
        return error_body(status, why.what)
    sites = [_site_entry(r) for r in reports]
    for a in why.done:
        created = created_ids(a.body)
        if created is not None:
            for entry in sites:
                if entry["site"] == a.site:
                    entry["id"] = created
    outcomes = ", ".join(
        f"{r.site}: {r.outcome}" + (f" ({r.detail})" if r.detail else "") for r in reports
    )
    message = f"{why.what}: {outcomes}" if outcomes else why.what
    if why.why:
        message += f"; {why.why}"
    kept = ", ".join(
        a.site or "?" for a in why.done if a.verdict is Verdict.OK and a.site not in why.undone
    )
    if why.undone:
        message += f"; done at {', '.join(why.undone)}, then undone (deleted)"
        for entry in sites:
            if entry["site"] in why.undone:
                entry["undone"] = True
    if kept:
        message += f"; done at {kept}, kept" + ("" if why.undone else " (nothing was undone)")
    return error_body(status, message, sites=sites)


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
