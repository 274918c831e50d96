"""Stand-in OpenStack site backends for the integration tests.

One small, real HTTP server (aiohttp.web, 127.0.0.1 only) per site, answering the
list/show/create/delete calls of nova, glance, neutron and keystone closely enough
to the real APIs for a gateway to be tested behind it: the same body shapes, the
same paging links (nova ``servers_links``, glance ``next``/``first``/``schema``,
neutron ``networks_links``, keystone ``links``), the same default orders and the
same error shapes. Each site is described by a :class:`SiteData` whose resources
and fault knobs (``delay``, ``fail_status``, ``hang``) tests change at run time,
and which logs every request it received (``received``).

Every service is mounted twice: at the root (``/v2.1/servers``, ``/v2/images``,
``/v2.0/networks``, ``/v3/users``) and under a devstack-like prefix
(``/compute/v2.1/...``, ``/image/v2/...``, ``/networking/v2.0/...``,
``/identity/v3/...``), so a site's services can be told apart by URL prefix in a
catalog or a gateway config. ``ANY /echo/{tail}`` answers what it received, under
the root and under every prefix.

Usage::

    data = SiteData("Berlin", servers=make_items("vm", 30, seed="Berlin"))
    async with serve(data) as url:           # http://127.0.0.1:PORT
        ...
    with serve_in_thread(data) as url:       # sync tests, subprocess-driven tests
        ...
    with serve_sites_in_thread([berlin, denver]) as urls:   # {"Berlin": url, ...}
        ...

Run one by hand: ``python -m tests.standin --name Berlin --items 30 --port 18774``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http
import json
import re
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cmp_to_key
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode

from aiohttp import web
from multidict import MultiDict, MultiMapping

__all__ = [
    "DATA_KEY",
    "GLANCE_DEFAULT_LIMIT",
    "GLANCE_MAX_LIMIT",
    "MOUNTS",
    "NOVA_MAX_LIMIT",
    "PATTERN",
    "ApiError",
    "ReceivedRequest",
    "SiteData",
    "UploadRecord",
    "build_app",
    "error_body",
    "main",
    "make_items",
    "pattern_chunks",
    "pattern_sha256",
    "serve",
    "serve_in_thread",
    "serve_sites",
    "serve_sites_in_thread",
]

Item = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = TypeVar("_T")

#: nova's ``[api] max_limit``: the page size when no ``limit`` is given, and its cap.
NOVA_MAX_LIMIT = 1000
#: glance's ``limit_param_default`` and ``api_limit_max``.
GLANCE_DEFAULT_LIMIT = 25
GLANCE_MAX_LIMIT = 1000

#: service type -> the prefix the service is also mounted under (besides the root).
MOUNTS: dict[str, str] = {
    "compute": "/compute",
    "image": "/image",
    "network": "/networking",
    "identity": "/identity",
}

#: 64 KiB of deterministic bytes; image downloads repeat it (see :func:`pattern_chunks`).
PATTERN: bytes = bytes(range(256)) * 256
_CHUNK = 64 * 1024
_MAX_DOWNLOAD = 1 << 40

_NAMESPACE = uuid.UUID("5c0bed0e-5a7e-4d1b-9a0e-0d5b1ac0ffee")
_BASE_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)
_PROJECT_ID = "0c9d4a8a1f2b4e6c8d0e1f2a3b4c5d6e"
_USER_ID = "a7c1e3f5b9d24f6a8c0e2b4d6f8a0c2e"


# --------------------------------------------------------------------------- data


@dataclass
class ReceivedRequest:
    """One request as a site saw it (logged before any fault knob applies)."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]  # lowercase names; repeated headers joined with ", "
    body_length: int
    body_sha256: str
    body: bytes | None = field(default=None, repr=False)  # kept when small, else None

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string parsed: name -> every value, in order."""
        return parse_qs(self.query_string, keep_blank_values=True)


@dataclass
class UploadRecord:
    """An image upload a site received: what was stored, as glance would record it."""

    image_id: str
    size: int
    sha256: str
    md5: str


@dataclass
class SiteData:
    """One site: its resources, its fault knobs and the log of what it received.

    Every field may be changed while the site is served (the handlers read them on
    each request); from another thread, plain attribute assignment is enough.
    """

    name: str
    servers: list[Item] = field(default_factory=list)
    images: list[Item] = field(default_factory=list)
    networks: list[Item] = field(default_factory=list)
    users: list[Item] = field(default_factory=list)
    #: seconds to wait before answering every request (emulated WAN latency)
    delay: float = 0.0
    #: answer every request with this status and an OpenStack-shaped error body
    fail_status: int | None = None
    #: accept every request (its body is read) but never answer, until the client
    #: gives up, the server stops, ``hang`` is set back to False (the request is then
    #: answered normally) or ``hang_limit`` seconds pass (then 503)
    hang: bool = False
    hang_limit: float = 600.0
    #: seconds to wait after reading each chunk of a request body (a slow link)
    read_pause: float = 0.0
    #: close the connection, unanswered, once this many body bytes were read
    #: (a site that dies in the middle of an upload)
    die_after: int | None = None
    #: every request seen, in arrival order
    received: list[ReceivedRequest] = field(default_factory=list)
    #: every image upload stored, in order
    uploads: list[UploadRecord] = field(default_factory=list)
    #: request bodies up to this size are kept in ``ReceivedRequest.body`` (and
    #: parsed as JSON by create calls); longer ones are only hashed, never held
    keep_body_limit: int = 1 << 20
    #: base of the absolute links the site writes (nova ``osapi_compute_link_prefix``,
    #: keystone ``public_endpoint``); None: the scheme and Host of each request
    public_url: str | None = None
    #: catalog entries of the tokens this site issues, beside or instead of the
    #: default ones: service type -> absolute URL (a gateway's, say) or a path under
    #: the site's base (``{"placement": "/echo/placement"}``)
    catalog: dict[str, str] = field(default_factory=dict)
    created_count: int = 0

    def collection(self, kind: str) -> list[Item]:
        """``servers``, ``images``, ``networks`` or ``users``."""
        if kind not in ("servers", "images", "networks", "users"):
            raise KeyError(kind)
        items: list[Item] = getattr(self, kind)
        return items

    def find(self, kind: str, item_id: str) -> Item | None:
        return next((i for i in self.collection(kind) if i.get("id") == item_id), None)

    def requests(self, method: str | None = None, path: str | None = None) -> list[ReceivedRequest]:
        """The received requests, optionally only those with this method / path."""
        return [
            r
            for r in self.received
            if (method is None or r.method == method.upper()) and (path is None or r.path == path)
        ]

    def reset_faults(self) -> None:
        self.delay, self.fail_status, self.hang = 0.0, None, False
        self.read_pause, self.die_after = 0.0, None


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_items(
    prefix: str,
    n: int,
    *,
    seed: str = "",
    start: datetime = _BASE_TIME,
    step_seconds: int = 60,
    **extra: Any,
) -> list[Item]:
    """``n`` deterministic items: ``id`` (a UUID derived from seed, prefix and index),
    ``name`` (``<prefix>-0000``, ...), ``created_at``/``updated_at`` (``start`` plus
    ``i * step_seconds``; 0 gives every item the same time, to exercise the ``id``
    tie-break), plus ``extra`` fields. Give each site its own ``seed`` for ids unique
    across sites; the same seed gives the same ids (one resource at several sites).
    """
    items: list[Item] = []
    for i in range(n):
        stamp = _iso(start + timedelta(seconds=step_seconds * i))
        items.append(
            {
                "id": str(uuid.uuid5(_NAMESPACE, f"{seed}/{prefix}/{i}")),
                "name": f"{prefix}-{i:04d}",
                "created_at": stamp,
                "updated_at": stamp,
                **extra,
            }
        )
    return items


def pattern_chunks(size: int) -> Iterator[memoryview]:
    """The ``size`` bytes an image download serves, as views on :data:`PATTERN`."""
    view = memoryview(PATTERN)
    left = size
    while left > 0:
        take = min(left, len(PATTERN))
        yield view[:take]
        left -= take


def pattern_sha256(size: int) -> str:
    """sha256 hex digest of the ``size`` bytes an image download serves."""
    digest = hashlib.sha256()
    for chunk in pattern_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------ errors


class ApiError(Exception):
    """Raised by handlers; turned into the error body of the service at hand."""

    def __init__(self, status: int, message: str, neutron_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.neutron_type = neutron_type


_NOVA_FAULTS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _service_of(path: str) -> str:
    for service, mount in MOUNTS.items():
        if path == mount or path.startswith(mount + "/"):
            return service
    for service, root in (
        ("compute", "/v2.1"),
        ("network", "/v2.0"),
        ("image", "/v2"),
        ("identity", "/v3"),
    ):
        if path == root or path.startswith(root + "/"):
            return service
    return "other"


def _mount_of(path: str) -> str:
    """The prefix this request came in under ("" at the root)."""
    service = _service_of(path)
    mount = MOUNTS.get(service, "")
    return mount if mount and (path == mount or path.startswith(mount + "/")) else ""


def error_body(service: str, status: int, message: str, neutron_type: str | None = None) -> Item:
    """The error body the real service answers with."""
    if service == "compute":
        fault = _NOVA_FAULTS.get(status, "computeFault")
        return {fault: {"code": status, "message": message}}
    if service == "image":  # glance: webob's JSON error body
        return {"code": f"{status} {_phrase(status)}", "title": _phrase(status), "message": message}
    if service == "network":
        kind = neutron_type or "HTTP" + _phrase(status).replace(" ", "").replace("-", "")
        return {"NeutronError": {"type": kind, "message": message, "detail": ""}}
    return {"error": {"code": status, "title": _phrase(status), "message": message}}


def _error_response(
    path: str, status: int, message: str, neutron_type: str | None = None
) -> web.Response:
    body = error_body(_service_of(path), status, message, neutron_type)
    return web.json_response(body, status=status)


# ------------------------------------------------------------------------- app


DATA_KEY = web.AppKey("standin.data", SiteData)
STOP_KEY = web.AppKey("standin.stopping", asyncio.Event)


def _data(request: web.Request) -> SiteData:
    return request.app[DATA_KEY]


@dataclass
class _Body:
    length: int
    sha256: str
    md5: str
    data: bytes | None


_RID = web.RequestKey("standin.request_id", str)
_BODY = web.RequestKey("standin.body", _Body)
_RECORD = web.RequestKey("standin.record", ReceivedRequest)


async def _read_body(
    request: web.Request, keep_limit: int, pause: float = 0.0, die_after: int | None = None
) -> _Body:
    """Read the whole body chunk by chunk, hashing it; keep it only if small."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    kept: bytearray | None = bytearray()
    length = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        if die_after is not None and length + len(chunk) > die_after:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if pause:
            await asyncio.sleep(pause)
        sha.update(chunk)
        md5.update(chunk)
        length += len(chunk)
        if kept is not None:
            if length <= keep_limit:
                kept += chunk
            else:
                kept = None
    return _Body(length, sha.hexdigest(), md5.hexdigest(), None if kept is None else bytes(kept))


async def _hang(request: web.Request, data: SiteData, stopping: asyncio.Event) -> bool:
    """Wait while ``data.hang``; True if released (answer normally)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, data.hang_limit)
    while data.hang and not stopping.is_set() and loop.time() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        await asyncio.sleep(0.02)
    return not data.hang


@web.middleware
async def _site_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    data = _data(request)
    request[_RID] = request.headers.get("X-OpenStack-Request-ID") or f"req-{uuid.uuid4()}"
    body = await _read_body(request, data.keep_body_limit, data.read_pause, data.die_after)
    request[_BODY] = body
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    record = ReceivedRequest(
        method=request.method,
        path=request.path,
        query_string=request.raw_path.partition("?")[2],  # as sent, still encoded
        headers=headers,
        body_length=body.length,
        body_sha256=body.sha256,
        body=body.data,
    )
    request[_RECORD] = record
    data.received.append(record)
    stopping = request.app[STOP_KEY]
    if data.delay > 0:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), data.delay)
    if data.hang and not await _hang(request, data, stopping):
        return _error_response(request.path, 503, f"site {data.name}: request left hanging")
    if data.fail_status is not None:
        message = f"site {data.name} is failing on purpose ({data.fail_status})"
        return _error_response(request.path, data.fail_status, message)
    try:
        return await handler(request)
    except ApiError as exc:
        return _error_response(request.path, exc.status, exc.message, exc.neutron_type)
    except web.HTTPException as exc:  # the router's 404/405
        if exc.status < 400:
            raise
        return _error_response(request.path, exc.status, exc.reason)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(_RID) or request.headers.get("X-OpenStack-Request-ID")
    response.headers["X-OpenStack-Request-ID"] = rid or f"req-{uuid.uuid4()}"
    response.headers["X-Site"] = _data(request).name


# ------------------------------------------------------------- listing helpers


SortSpec = list[tuple[str, bool]]  # (key, descending)


def _check_dirs(dirs: list[str]) -> None:
    for direction in dirs:
        if direction not in ("asc", "desc"):
            raise ApiError(400, f"Invalid sort direction: {direction}")


def _sort_spec(keys: list[str], dirs: list[str], tiebreak: Iterable[str]) -> SortSpec:
    """nova/glance rules: one direction applies to every key; missing directions and
    the tie-break keys take the first direction."""
    _check_dirs(dirs)
    default = dirs[0] if dirs else "desc"
    if len(dirs) > len(keys):
        raise ApiError(400, "Sort direction size exceeds sort key size")
    dirs = dirs + [default] * (len(keys) - len(dirs))
    spec = [(k, d == "desc") for k, d in zip(keys, dirs, strict=True)]
    spec += [(k, default == "desc") for k in tiebreak if k not in keys]
    return spec


def _compare(a: Any, b: Any) -> int:
    if a is None or b is None:
        return (a is not None) - (b is not None)  # None sorts first (lowest)
    if type(a) is not type(b):
        a, b = str(a), str(b)
    return int(a > b) - int(a < b)


def _sorted(items: list[Item], spec: SortSpec) -> list[Item]:
    def cmp(x: Item, y: Item) -> int:
        for key, descending in spec:
            result = _compare(x.get(key), y.get(key))
            if result:
                return -result if descending else result
        return 0

    return sorted(items, key=cmp_to_key(cmp))


def _int_param(query: MultiMapping[str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"Invalid input for query parameter {name}: {raw!r}") from None
    if value < 0:
        raise ApiError(400, f"{name} param must be positive")
    return value


def _after_marker(ordered: list[Item], marker: str | None, on_unknown: ApiError) -> list[Item]:
    if marker is None:
        return ordered
    for index, item in enumerate(ordered):
        if item.get("id") == marker:
            return ordered[index + 1 :]
    raise on_unknown


def _with_params(query: MultiMapping[str], **updates: str | int) -> str:
    """The query with the ``updates`` names replaced (appended last), other params kept."""
    pairs = [(k, v) for k, v in query.items() if k not in updates]
    pairs += [(k, str(v)) for k, v in updates.items()]
    return urlencode(pairs)


def _base(request: web.Request) -> str:
    public = _data(request).public_url
    return public.rstrip("/") if public else f"{request.scheme}://{request.host}"


def _absolute(request: web.Request, query: str | None = None) -> str:
    url = _base(request) + request.path
    return f"{url}?{query}" if query else url


def _filter_name(items: list[Item], name: str | None, regex: bool = False) -> list[Item]:
    if name is None:
        return items
    if regex:
        try:
            pattern = re.compile(name)
        except re.error:
            raise ApiError(400, f"Invalid regular expression: {name}") from None
        return [i for i in items if pattern.search(str(i.get("name", "")))]
    return [i for i in items if i.get("name") == name]


def _json_body(request: web.Request) -> Item:
    body = request[_BODY]
    if body.data is None:
        raise ApiError(413, "Request body too large")
    try:
        parsed = json.loads(body.data or b"null")
    except ValueError:
        raise ApiError(400, "Malformed request body") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "Malformed request body: expected a JSON object")
    return parsed


def _new_item(data: SiteData, kind: str, name: str, fields: Item) -> Item:
    data.created_count += 1
    now = _iso(datetime.now(timezone.utc))
    item: Item = {
        **fields,
        "id": str(uuid.uuid5(_NAMESPACE, f"{data.name}/{kind}/created/{data.created_count}")),
        "name": name,
        "created_at": now,
        "updated_at": now,
    }
    data.collection(kind).append(item)
    return item


def _remove(data: SiteData, kind: str, item_id: str) -> bool:
    items = data.collection(kind)
    for index, item in enumerate(items):
        if item.get("id") == item_id:
            del items[index]
            return True
    return False


# ------------------------------------------------------------------------ nova


def _nova_links(request: web.Request, server_id: str) -> list[Item]:
    root = _base(request) + _mount_of(request.path)
    return [
        {"rel": "self", "href": f"{root}/v2.1/servers/{server_id}"},
        {"rel": "bookmark", "href": f"{root}/servers/{server_id}"},
    ]


def _nova_detail(request: web.Request, item: Item) -> Item:
    view: Item = {
        "status": "ACTIVE",
        "tenant_id": _PROJECT_ID,
        "user_id": _USER_ID,
        "metadata": {},
        "addresses": {},
        "OS-EXT-STS:task_state": None,
        "OS-EXT-STS:vm_state": "active",
        "OS-EXT-STS:power_state": 1,
        "created": item.get("created_at"),
        "updated": item.get("updated_at", item.get("created_at")),
        "hostId": "",
    }
    view.update(item)
    view["links"] = _nova_links(request, str(item["id"]))
    return view


async def nova_list(request: web.Request) -> web.Response:
    data, query = _data(request), request.query
    detail = request.path.endswith("/detail")
    limit = _int_param(query, "limit")
    limit = NOVA_MAX_LIMIT if limit is None else min(limit, NOVA_MAX_LIMIT)
    keys, dirs = query.getall("sort_key", []), query.getall("sort_dir", [])
    spec = _sort_spec(keys or ["created_at"], dirs or ["desc"], ("created_at", "id"))
    ordered = _sorted(_filter_name(data.servers, query.get("name"), regex=True), spec)
    marker = query.get("marker")
    rest = _after_marker(ordered, marker, ApiError(400, f"marker [{marker}] not found"))
    page = rest[:limit]
    if detail:
        servers = [_nova_detail(request, s) for s in page]
    else:
        servers = [
            {"id": s["id"], "name": s.get("name"), "links": _nova_links(request, str(s["id"]))}
            for s in page
        ]
    body: Item = {"servers": servers}
    if page and len(page) == limit:
        href = _absolute(request, _with_params(query, limit=limit, marker=page[-1]["id"]))
        body["servers_links"] = [{"rel": "next", "href": href}]
    return web.json_response(body)


async def nova_show(request: web.Request) -> web.Response:
    server_id = request.match_info["id"]
    item = _data(request).find("servers", server_id)
    if item is None:
        raise ApiError(404, f"Instance {server_id} could not be found.")
    return web.json_response({"server": _nova_detail(request, item)})


async def nova_create(request: web.Request) -> web.Response:
    server = _json_body(request).get("server")
    if not isinstance(server, dict) or not isinstance(server.get("name"), str):
        raise ApiError(
            400, "Invalid input for field/attribute server. 'name' is a required property"
        )
    fields = {k: v for k, v in server.items() if k not in ("id", "name", "adminPass")}
    item = _new_item(_data(request), "servers", server["name"], {"status": "BUILD", **fields})
    links = _nova_links(request, item["id"])
    body = {
        "server": {
            "id": item["id"],
            "links": links,
            "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": "default"}],
            "adminPass": "standin-" + item["id"][:8],
        }
    }
    return web.json_response(body, status=202, headers={"Location": links[0]["href"]})


async def nova_delete(request: web.Request) -> web.Response:
    server_id = request.match_info["id"]
    if not _remove(_data(request), "servers", server_id):
        raise ApiError(404, f"Instance {server_id} could not be found.")
    return web.Response(status=204)


# ---------------------------------------------------------------------- glance


def _glance_view(item: Item) -> Item:
    image_id = str(item["id"])
    view: Item = {
        "status": "active",
        "visibility": "public",
        "protected": False,
        "os_hidden": False,
        "tags": [],
        "container_format": "bare",
        "disk_format": "qcow2",
        "min_disk": 0,
        "min_ram": 0,
        "size": None,
        "virtual_size": None,
        "checksum": None,
        "os_hash_algo": None,
        "os_hash_value": None,
        "owner": _PROJECT_ID,
        "updated_at": item.get("created_at"),
    }
    view.update(item)
    view.update(
        {
            "self": f"/v2/images/{image_id}",
            "file": f"/v2/images/{image_id}/file",
            "schema": "/v2/schemas/image",
        }
    )
    return view


def _glance_sort(query: MultiMapping[str]) -> SortSpec:
    keys, dirs = query.getall("sort_key", []), query.getall("sort_dir", [])
    sort = query.getall("sort", [])
    if sort:
        if keys or dirs:
            raise ApiError(400, "The 'sort' parameter cannot be used with 'sort_key'/'sort_dir'")
        for part in ",".join(sort).split(","):
            key, _, direction = part.strip().partition(":")
            if not key:
                raise ApiError(400, f"Invalid sort parameter: {','.join(sort)}")
            keys.append(key)
            dirs.append(direction or "desc")
        _check_dirs(dirs)
        spec = [(k, d == "desc") for k, d in zip(keys, dirs, strict=True)]
        default_desc = dirs[0] == "desc" if len(dirs) == 1 else True
        return spec + [(k, default_desc) for k in ("created_at", "id") if k not in keys]
    if len(dirs) > 1 and len(dirs) != len(keys):
        raise ApiError(400, "Number of sort dirs does not match the number of sort keys")
    return _sort_spec(keys or ["created_at"], dirs, ("created_at", "id"))


async def glance_list(request: web.Request) -> web.Response:
    data, query = _data(request), request.query
    limit = _int_param(query, "limit")
    limit = GLANCE_DEFAULT_LIMIT if limit is None else min(limit, GLANCE_MAX_LIMIT)
    ordered = _sorted(_filter_name(data.images, query.get("name")), _glance_sort(query))
    marker = query.get("marker")
    rest = _after_marker(ordered, marker, ApiError(400, f"Invalid marker {marker}"))
    page = rest[:limit]
    without_marker = urlencode([(k, v) for k, v in query.items() if k != "marker"])
    body: Item = {
        "images": [_glance_view(i) for i in page],
        "first": "/v2/images" + (f"?{without_marker}" if without_marker else ""),
        "schema": "/v2/schemas/images",
    }
    if page and len(page) == limit:
        body["next"] = "/v2/images?" + _with_params(query, limit=limit, marker=page[-1]["id"])
    return web.json_response(body)


def _glance_image(request: web.Request) -> Item:
    image_id = request.match_info["id"]
    item = _data(request).find("images", image_id)
    if item is None:
        raise ApiError(404, f"No image found with ID {image_id}")
    return item


async def glance_show(request: web.Request) -> web.Response:
    return web.json_response(_glance_view(_glance_image(request)))


async def glance_create(request: web.Request) -> web.Response:
    fields = _json_body(request)
    name = fields.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "Invalid value for name")
    rest = {k: v for k, v in fields.items() if k not in ("id", "name")}
    chosen = fields.get("id")
    data = _data(request)
    if chosen is not None and data.find("images", str(chosen)) is not None:
        raise ApiError(409, f"Image with identifier {chosen} already exists!")
    item = _new_item(data, "images", name or "", {"status": "queued", **rest})
    if chosen is not None:  # glance takes the client's ID
        item["id"] = str(chosen)
    view = _glance_view(item)
    return web.json_response(view, status=201, headers={"Location": view["self"]})


async def glance_delete(request: web.Request) -> web.Response:
    item = _glance_image(request)
    _remove(_data(request), "images", str(item["id"]))
    return web.Response(status=204)


async def glance_upload(request: web.Request) -> web.Response:
    # The body was already streamed through _read_body: hashed chunk by chunk, kept
    # only if small. That is all glance records of it here.
    item = _glance_image(request)
    body = request[_BODY]
    record = UploadRecord(str(item["id"]), body.length, body.sha256, body.md5)
    _data(request).uploads.append(record)
    item.update(
        status="active",
        size=body.length,
        checksum=body.md5,
        os_hash_algo="sha256",
        os_hash_value=body.sha256,
        updated_at=_iso(datetime.now(timezone.utc)),
    )
    return web.Response(status=204)


async def glance_download(request: web.Request) -> web.StreamResponse:
    item = _glance_image(request)
    size = _int_param(request.query, "size")
    if size is None:
        size = item.get("size") if isinstance(item.get("size"), int) else None
    if size is None:
        return web.Response(status=204)  # glance: an image without data
    if size > _MAX_DOWNLOAD:
        raise ApiError(400, f"size must be at most {_MAX_DOWNLOAD}")
    response = web.StreamResponse(status=200)
    response.content_type = "application/octet-stream"
    response.content_length = size
    await response.prepare(request)
    if request.method != "HEAD":
        for chunk in pattern_chunks(size):
            await response.write(chunk)
    await response.write_eof()
    return response


# --------------------------------------------------------------------- neutron


def _neutron_view(item: Item) -> Item:
    view: Item = {
        "status": "ACTIVE",
        "admin_state_up": True,
        "subnets": [],
        "shared": False,
        "router:external": False,
        "mtu": 1450,
        "description": "",
        "tags": [],
        "availability_zones": ["nova"],
        "revision_number": 1,
        "tenant_id": _PROJECT_ID,
        "project_id": _PROJECT_ID,
        "updated_at": item.get("created_at"),
    }
    view.update(item)
    return view


def _not_found_network(network_id: str) -> ApiError:
    return ApiError(404, f"Network {network_id} could not be found.", "NetworkNotFound")


async def neutron_list(request: web.Request) -> web.Response:
    data, query = _data(request), request.query
    limit = _int_param(query, "limit") or None  # neutron: 0 or absent = no paging
    keys, dirs = query.getall("sort_key", []), query.getall("sort_dir", [])
    if len(keys) != len(dirs):
        raise ApiError(400, "The number of sort_keys and sort_dirs must be same", "BadRequest")
    _check_dirs(dirs)
    spec = [(k, d == "desc") for k, d in zip(keys, dirs, strict=True)]
    if "id" not in keys:
        spec.append(("id", False))
    reverse = query.get("page_reverse", "").lower() == "true"
    if reverse:
        spec = [(k, not desc) for k, desc in spec]
    ordered = _sorted(_filter_name(data.networks, query.get("name")), spec)
    marker = query.get("marker")
    rest = _after_marker(ordered, marker if limit else None, _not_found_network(str(marker)))
    page = rest[:limit] if limit else rest
    if reverse:
        page.reverse()
    body: Item = {"networks": [_neutron_view(n) for n in page]}
    if limit and page:
        links: list[Item] = []
        if len(page) == limit or reverse:
            forward = [(k, v) for k, v in query.items() if k != "page_reverse"]
            query_next = _with_params(MultiDict(forward), limit=limit, marker=page[-1]["id"])
            links.append({"rel": "next", "href": _absolute(request, query_next)})
        if marker and (len(page) == limit or not reverse):
            query_prev = _with_params(query, limit=limit, marker=page[0]["id"], page_reverse="True")
            links.append({"rel": "previous", "href": _absolute(request, query_prev)})
        body["networks_links"] = links
    return web.json_response(body)


async def neutron_show(request: web.Request) -> web.Response:
    network_id = request.match_info["id"]
    item = _data(request).find("networks", network_id)
    if item is None:
        raise _not_found_network(network_id)
    return web.json_response({"network": _neutron_view(item)})


async def neutron_create(request: web.Request) -> web.Response:
    network = _json_body(request).get("network")
    if not isinstance(network, dict):
        raise ApiError(400, "Resource body required", "BadRequest")
    name = network.get("name", "")
    fields = {k: v for k, v in network.items() if k not in ("id", "name")}
    item = _new_item(_data(request), "networks", str(name), fields)
    return web.json_response({"network": _neutron_view(item)}, status=201)


async def neutron_delete(request: web.Request) -> web.Response:
    network_id = request.match_info["id"]
    if not _remove(_data(request), "networks", network_id):
        raise _not_found_network(network_id)
    return web.Response(status=204)


# -------------------------------------------------------------------- keystone


def _keystone_user(request: web.Request, item: Item) -> Item:
    view: Item = {
        "domain_id": "default",
        "enabled": True,
        "password_expires_at": None,
        "options": {},
    }
    view.update(item)
    root = _base(request) + _mount_of(request.path)
    view["links"] = {"self": f"{root}/v3/users/{item['id']}"}
    return view


async def keystone_users(request: web.Request) -> web.Response:
    users = _filter_name(_data(request).users, request.query.get("name"))
    body = {
        "users": [_keystone_user(request, u) for u in users],
        "links": {"self": _absolute(request, request.query_string), "previous": None, "next": None},
    }
    return web.json_response(body)


async def keystone_user(request: web.Request) -> web.Response:
    user_id = request.match_info["id"]
    item = _data(request).find("users", user_id)
    if item is None:
        raise ApiError(404, f"Could not find user: {user_id}.")
    return web.json_response({"user": _keystone_user(request, item)})


def _token(data: SiteData, seen: dict[str, str | None]) -> Item:
    now = datetime.now(timezone.utc)
    return {
        "methods": ["password"],
        "user": {"id": _USER_ID, "name": "scoped", "domain": {"id": "default", "name": "Default"}},
        "project": {
            "id": _PROJECT_ID,
            "name": "service",
            "domain": {"id": "default", "name": "Default"},
        },
        "roles": [{"id": "9fe2ff9ee4384b1894a90878d3e92bab", "name": "admin"}],
        "audit_ids": [str(uuid.uuid5(_NAMESPACE, f"{data.name}/{seen}"))[:22]],
        "issued_at": _iso(now),
        "expires_at": _iso(now + timedelta(hours=1)),
        "site": data.name,
        "seen": seen,
    }


async def keystone_validate(request: web.Request) -> web.Response:
    """GET/HEAD /v3/auth/tokens: 200, and which tokens arrived (body ``seen``)."""
    data = _data(request)
    seen = {
        "x-auth-token": request.headers.get("X-Auth-Token"),
        "x-subject-token": request.headers.get("X-Subject-Token"),
    }
    headers = {"X-Subject-Token": seen["x-subject-token"] or ""}
    return web.json_response({"token": _token(data, seen), "seen": seen}, headers=headers)


async def keystone_issue(request: web.Request) -> web.Response:
    """POST /v3/auth/tokens: 201, a new token in X-Subject-Token and a catalog whose
    endpoints are this site's prefixed mounts (region = the site's name)."""
    data = _data(request)
    _json_body(request)
    base = _base(request)
    urls = {
        "compute": f"{base}{MOUNTS['compute']}/v2.1",
        "image": f"{base}{MOUNTS['image']}",
        "network": f"{base}{MOUNTS['network']}",
        "identity": f"{base}{MOUNTS['identity']}",
    }
    for service, url in data.catalog.items():
        urls[service] = url if "://" in url else f"{base}{url}"
    names = {"compute": "nova", "image": "glance", "network": "neutron", "identity": "keystone"}
    catalog = [
        {
            "type": service,
            "name": names.get(service, service),
            "id": uuid.uuid5(_NAMESPACE, f"{data.name}/{service}").hex,
            "endpoints": [
                {
                    "id": uuid.uuid5(_NAMESPACE, f"{data.name}/{service}/{iface}").hex,
                    "interface": iface,
                    "region": data.name,
                    "region_id": data.name,
                    "url": url,
                }
                for iface in ("public", "internal")
            ],
        }
        for service, url in urls.items()
    ]
    subject = f"tok-{data.name}-{uuid.uuid4().hex}"
    token = _token(data, {"x-auth-token": None, "x-subject-token": None})
    token["catalog"] = catalog
    del token["seen"]
    return web.json_response({"token": token}, status=201, headers={"X-Subject-Token": subject})


# ---------------------------------------------------------------- misc routes


async def echo(request: web.Request) -> web.Response:
    record = request[_RECORD]
    return web.json_response(
        {
            "site": _data(request).name,
            "method": record.method,
            "path": record.path,
            "query": record.query_string,
            "headers": record.headers,
            "body_length": record.body_length,
            "body_sha256": record.body_sha256,
        }
    )


async def versions(request: web.Request) -> web.Response:
    """The unversioned root of a mount: each service's version document."""
    service = _service_of(request.path)
    root = _base(request) + MOUNTS[service]

    def version(vid: str, path: str, status: str = "CURRENT") -> Item:
        return {"id": vid, "status": status, "links": [{"rel": "self", "href": f"{root}{path}"}]}

    if service == "compute":
        doc = version("v2.1", "/v2.1/") | {"version": "2.96", "min_version": "2.1"}
        return web.json_response({"versions": [doc]})
    if service == "image":
        return web.json_response({"versions": [version("v2.16", "/v2/")]}, status=300)
    if service == "network":
        return web.json_response({"versions": [version("v2.0", "/v2.0/")]})
    doc = version("v3.14", "/v3/", "stable")
    return web.json_response({"versions": {"values": [doc]}}, status=300)


async def keystone_version(request: web.Request) -> web.Response:
    root = _base(request) + _mount_of(request.path)
    link = {"rel": "self", "href": f"{root}/v3/"}
    return web.json_response({"version": {"id": "v3.14", "status": "stable", "links": [link]}})


async def site_root(request: web.Request) -> web.Response:
    base = _base(request)
    mounts = {service: base + mount for service, mount in MOUNTS.items()}
    return web.json_response({"site": _data(request).name, "mounts": mounts})


def build_app(data: SiteData) -> web.Application:
    """One aiohttp application serving every stand-in service of ``data``'s site."""
    app = web.Application(middlewares=[_site_middleware], client_max_size=1 << 20)
    app[DATA_KEY] = data
    app[STOP_KEY] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        app[STOP_KEY].set()

    app.on_shutdown.append(on_shutdown)
    app.on_response_prepare.append(_on_prepare)
    router = app.router
    router.add_get("/", site_root)
    for mount in MOUNTS.values():
        router.add_get(mount, versions)
        router.add_get(mount + "/", versions)
    for mount in ("", *MOUNTS.values()):
        router.add_route("*", mount + "/echo/{tail:.*}", echo)
    for m in ("", MOUNTS["compute"]):
        router.add_get(m + "/v2.1/servers", nova_list)
        router.add_post(m + "/v2.1/servers", nova_create)
        router.add_get(m + "/v2.1/servers/detail", nova_list)
        router.add_get(m + "/v2.1/servers/{id}", nova_show)
        router.add_delete(m + "/v2.1/servers/{id}", nova_delete)
    for m in ("", MOUNTS["image"]):
        router.add_get(m + "/v2/images", glance_list)
        router.add_post(m + "/v2/images", glance_create)
        router.add_get(m + "/v2/images/{id}", glance_show)
        router.add_delete(m + "/v2/images/{id}", glance_delete)
        router.add_put(m + "/v2/images/{id}/file", glance_upload)
        router.add_get(m + "/v2/images/{id}/file", glance_download)
    for m in ("", MOUNTS["network"]):
        router.add_get(m + "/v2.0/networks", neutron_list)
        router.add_post(m + "/v2.0/networks", neutron_create)
        router.add_get(m + "/v2.0/networks/{id}", neutron_show)
        router.add_delete(m + "/v2.0/networks/{id}", neutron_delete)
    for m in ("", MOUNTS["identity"]):
        router.add_get(m + "/v3", keystone_version)
        router.add_get(m + "/v3/", keystone_version)
        router.add_get(m + "/v3/users", keystone_users)
        router.add_get(m + "/v3/users/{id}", keystone_user)
        router.add_get(m + "/v3/auth/tokens", keystone_validate)
        router.add_post(m + "/v3/auth/tokens", keystone_issue)
    return app


# ---------------------------------------------------------------------- serving


@contextlib.asynccontextmanager
async def serve(app_or_data: web.Application | SiteData, *, port: int = 0) -> AsyncIterator[str]:
    """Serve on 127.0.0.1 (``port`` 0: a free one); yield ``http://127.0.0.1:PORT``."""
    app = app_or_data if isinstance(app_or_data, web.Application) else build_app(app_or_data)
    # handler_cancellation: a handler whose client went away (timed out) is cancelled,
    # so hung or delayed requests never hold the shutdown.
    runner = web.AppRunner(app, shutdown_timeout=2.0, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        bound = runner.addresses[0][1]
        yield f"http://127.0.0.1:{bound}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_sites(sites: Iterable[SiteData]) -> AsyncIterator[dict[str, str]]:
    """Serve several sites; yield ``{site name: base URL}``."""
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        for data in sites:
            urls[data.name] = await stack.enter_async_context(serve(data))
        yield urls


class LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="standin-loop", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.call(self.loop.shutdown_asyncgens(), timeout=5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10.0)
        if not self.thread.is_alive():
            self.loop.close()


@contextlib.contextmanager
def serve_sites_in_thread(sites: Iterable[SiteData]) -> Iterator[dict[str, str]]:
    """:func:`serve_sites` in a background thread with its own event loop."""
    with LoopThread() as worker:
        context = serve_sites(list(sites))
        urls = worker.call(context.__aenter__())
        try:
            yield urls
        finally:
            worker.call(context.__aexit__(None, None, None))


@contextlib.contextmanager
def serve_in_thread(app_or_data: web.Application | SiteData, *, port: int = 0) -> Iterator[str]:
    """:func:`serve` in a background thread with its own event loop (sync tests)."""
    with LoopThread() as worker:
        context = serve(app_or_data, port=port)
        url = worker.call(context.__aenter__())
        try:
            yield url
        finally:
            worker.call(context.__aexit__(None, None, None))


def main(argv: list[str] | None = None) -> None:
    """Serve one stand-in site until interrupted (for trying things by hand)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", default="RegionOne")
    parser.add_argument("--items", type=int, default=5, help="servers/images/networks/users")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    data = SiteData(
        args.name,
        servers=make_items("vm", args.items, seed=args.name),
        images=make_items("img", args.items, seed=args.name),
        networks=make_items("net", args.items, seed=args.name),
        users=make_items("user", args.items, seed=args.name),
    )

    async def run() -> None:
        async with serve(data, port=args.port) as url:
            print(url, flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
