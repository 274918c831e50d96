"""Answer -> the response the client gets: body, ``X-Scope``, ``X-Scope-Sites``."""

from __future__ import annotations

from collections.abc import Sequence

from .execute import Answer, SiteReport
from .http import HOP_BY_HOP, Request, Response
from .merge import render
from .paging import Listing

_DROP_WHEN_REWRITTEN = frozenset({"content-length", "content-encoding", "etag", "content-md5"})


def scope_headers(applied: str, reports: Sequence[SiteReport]) -> list[tuple[str, str]]:
    out = [("x-scope", applied)]
    if reports:
        out.append(("x-scope-sites", ", ".join(r.entry() for r in reports)))
    return out


def respond(answer: Answer, applied: str, req: Request, listing: Listing | None) -> Response:
    """The client's response; a streamed upstream body stays streamed."""
    extra = scope_headers(applied, answer.reports)
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


def _clean(
    headers: Sequence[tuple[str, str]], drop: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    return [
        (k, v)
        for k, v in headers
        if k not in HOP_BY_HOP and k not in drop and k not in ("x-scope", "x-scope-sites")
    ]
