"""The WSGI filter inside real paste pipelines, served by a real WSGI server.

Each filter site is a threaded ``wsgiref`` server on loopback whose
application is loaded by PasteDeploy from an ``.ini`` file (the entry point
``egg:scoped-gateway#scoped`` and the ``paste.filter_factory`` path both used):
``/image`` is a glance-like pipeline ``scoped -> glance app``, ``/compute``
a nova-like nested urlmap (``/compute`` then ``/v2.1``, as nova's own) with
``scoped -> nova app``, and ``/identity`` a keystone-like app wrapped with
:func:`~scoped_middleware.wsgi.wrap`. The apps are small WebOb apps shaped like
the OpenStack endpoints; they log what they saw and whether their response
iterables were closed. Berlin, Denver and Paris run the filter; Lyon is a
stand-in site with no filter (:mod:`tests.standin`); nothing listens at Oslo.

Timings are printed, never asserted: concurrency is shown by the order of
events (the sites' handling intervals overlap).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
import webob
import webob.exc
import yaml
from paste.deploy import loadapp
from scoped_middleware import wsgi as scoped_wsgi
from scoped_middleware.wsgi import ScopedFilter, wrap

from scoped.carry import attach
from scoped.errors import ConfigError
from tests.federation import free_port
from tests.federation import scope_sites as sites_of
from tests.pki import Authority
from tests.standin import PATTERN, SiteData, make_items, pattern_sha256, serve_sites_in_thread

FILTER_SITES = ("Berlin", "Denver", "Paris")
PLAIN = "Lyon"
DOWN = "Oslo"

# --------------------------------------------------------------------------- apps


@dataclass
class Seen:
    """One call an application handled."""

    method: str
    script_name: str
    path_info: str
    query: str
    headers: dict[str, str]
    body: bytes
    thread: int
    started: float
    ended: float = 0.0


@dataclass
class AppLog:
    """What one site's application saw, and its fault knobs."""

    site: str
    calls: list[Seen] = field(default_factory=list)
    opened: int = 0
    closed: int = 0
    delay: float = 0.0
    fail_status: int | None = None
    streamed_json: bool = False
    """Answer lists as a generator with no Content-Length (read as a stream)."""
    explode: bool = False
    """Raise instead of answering (a bug in the service)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.opened = self.closed = 0
        self.delay, self.fail_status, self.streamed_json, self.explode = 0.0, None, False, False

    def all_closed(self, wait: float = 5.0) -> bool:
        """Every response iterable was closed (the server closes after sending)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.opened == self.closed:
                return True
            time.sleep(0.01)
        return self.opened == self.closed


class Tracked:
    """A response iterable that records its close() (PEP 3333)."""

    def __init__(self, inner: Iterable[bytes], log: AppLog) -> None:
        self._inner = inner
        self._log = log
        self._closed = False
        with log.lock:
            log.opened += 1

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()
        with self._log.lock:
            self._log.closed += 1


def _headers_of(environ: dict[str, Any]) -> dict[str, str]:
    return {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}


def _json(data: Any, status: int = 200) -> webob.Response:
    return webob.Response(
        json.dumps(data).encode(), status=status, content_type="application/json", charset=None
    )


class LoggedApp:
    """Base of the test apps: logs each call, applies the fault knobs, tracks
    the response iterable."""

    def __init__(self, log: AppLog) -> None:
        self.log = log

    def handle(self, req: webob.Request) -> webob.Response:
        raise NotImplementedError

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        started = time.monotonic()
        req = webob.Request(environ)
        body = req.body if req.content_length is not None and req.content_length < 1 << 20 else b""
        seen = Seen(
            req.method,
            environ.get("SCRIPT_NAME", ""),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            _headers_of(environ),
            body,
            threading.get_ident(),
            started,
        )
        if self.log.delay:
            time.sleep(self.log.delay)
        if self.log.explode:
            raise RuntimeError(f"{self.log.site}: boom")
        if self.log.fail_status is not None:
            resp = _json({"message": f"{self.log.site} fails"}, self.log.fail_status)
        else:
            resp = self.handle(req)
        seen.ended = time.monotonic()
        with self.log.lock:
            self.log.calls.append(seen)
        return Tracked(resp(environ, start_response), self.log)


def _echo(req: webob.Request, site: str) -> webob.Response:
    return _json(
        {
            "site": site,
            "method": req.method,
            "script_name": req.script_name,
            "path_info": req.path_info,
            "query": req.query_string,
            "headers": _headers_of(req.environ),
            "body_length": len(req.body),
        }
    )


class GlanceApp(LoggedApp):
    """``/v2/images`` list (limit, marker, glance's ``next``), show, create,
    upload and download (``?size=N`` bytes, streamed), and ``/echo``."""

    def __init__(self, log: AppLog, images: list[dict[str, Any]]) -> None:
        super().__init__(log)
        self.images = images

    def handle(self, req: webob.Request) -> webob.Response:
        parts = [p for p in req.path_info.split("/") if p]
        if parts[:1] == ["echo"]:
            return _echo(req, self.log.site)
        if parts[:2] != ["v2", "images"]:
            return _json({"message": "not found"}, 404)
        rest = parts[2:]
        if not rest and req.method in ("GET", "HEAD"):
            return self._list(req)
        if not rest and req.method == "POST":
            image = {"id": f"{self.log.site}-{len(self.images)}", **json.loads(req.body)}
            self.images.append(image)
            return _json(image, 201)
        if len(rest) == 2 and rest[1] == "file" and req.method == "GET":
            return self._download(int(req.GET.get("size", "0")))
        if len(rest) == 2 and rest[1] == "file" and req.method == "PUT":
            return self._upload(req)
        found = [i for i in self.images if i["id"] == rest[0]]
        if len(rest) == 1 and req.method == "GET" and found:
            return _json(found[0])
        return _json({"message": f"No image found with ID {rest[0]}"}, 404)

    def _list(self, req: webob.Request) -> webob.Response:
        limit = int(req.GET.get("limit", "25"))
        marker = req.GET.get("marker")
        start = 0
        if marker is not None:
            ids = [i["id"] for i in self.images]
            if marker not in ids:
                return _json({"message": f"Invalid marker {marker}"}, 400)
            start = ids.index(marker) + 1
        page = self.images[start : start + limit]
        body: dict[str, Any] = {
            "images": page,
            "first": "/v2/images",
            "schema": "/v2/schemas/images",
        }
        if page and start + limit < len(self.images):
            body["next"] = "/v2/images?" + urlencode({"limit": limit, "marker": page[-1]["id"]})
        if self.log.streamed_json:
            data = json.dumps(body).encode()
            resp = webob.Response(content_type="application/json", charset=None)
            resp.app_iter = (data[i : i + 7] for i in range(0, len(data), 7))
            return resp
        return _json(body)

    @staticmethod
    def _download(size: int) -> webob.Response:
        def chunks() -> Iterator[bytes]:
            left = size
            while left > 0:
                take = min(left, len(PATTERN))
                yield PATTERN[:take]
                left -= take

        resp = webob.Response(content_type="application/octet-stream", charset=None)
        resp.app_iter = chunks()
        resp.content_length = size
        return resp

    @staticmethod
    def _upload(req: webob.Request) -> webob.Response:
        digest = hashlib.sha256()
        size = 0
        stream = req.body_file
        while chunk := stream.read(64 * 1024):
            digest.update(chunk)
            size += len(chunk)
        return _json({"size": size, "sha256": digest.hexdigest()})


class NovaApp(LoggedApp):
    """Mounted at ``/compute/v2.1`` by nested urlmaps: ``/servers`` and ``/echo``."""

    def __init__(self, log: AppLog, servers: list[dict[str, Any]]) -> None:
        super().__init__(log)
        self.servers = servers

    def handle(self, req: webob.Request) -> webob.Response:
        if req.path_info.startswith("/echo"):
            return _echo(req, self.log.site)
        if req.path_info == "/servers":
            return _json({"servers": self.servers})
        return _json({"itemNotFound": {"code": 404, "message": "not found"}}, 404)


class KeystoneApp(LoggedApp):
    """Any path: which tokens arrived (``/v3/auth/tokens`` validation)."""

    def handle(self, req: webob.Request) -> webob.Response:
        return _json(
            {
                "site": self.log.site,
                "x-auth-token": req.headers.get("X-Auth-Token"),
                "x-subject-token": req.headers.get("X-Subject-Token"),
            }
        )


@dataclass
class SiteApps:
    glance: GlanceApp
    nova: NovaApp
    keystone: KeystoneApp


APPS: dict[str, SiteApps] = {}
"""Site name -> its applications, as the paste factories built them."""


def _apps(site: str) -> SiteApps:
    if site not in APPS:
        APPS[site] = SiteApps(
            GlanceApp(AppLog(site), make_items("img", 5, seed=f"{site}/img")),
            NovaApp(AppLog(site), make_items("vm", 2, seed=f"{site}/vm")),
            KeystoneApp(AppLog(site)),
        )
    return APPS[site]


def glance_factory(global_conf: dict[str, Any], site: str) -> GlanceApp:
    """``paste.app_factory`` of the glance-like app."""
    return _apps(site).glance


def nova_factory(global_conf: dict[str, Any], site: str) -> NovaApp:
    return _apps(site).nova


class Mount:
    """A urlmap: the longest matching prefix moves from PATH_INFO to SCRIPT_NAME."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = sorted(apps.items(), key=lambda kv: len(kv[0]), reverse=True)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix, app in self.apps:
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :]
                result: Iterable[bytes] = app(environ, start_response)
                return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such mount"]


def mount_factory(loader: Any, global_conf: dict[str, Any], **local_conf: str) -> Mount:
    """``paste.composite_factory``: ``/prefix = app name`` lines, as paste's urlmap."""
    return Mount(
        {p: loader.get_app(name, global_conf=global_conf) for p, name in local_conf.items()}
    )


INI = """\
[composite:main]
paste.composite_factory = tests.middleware.test_wsgi:mount_factory
/image = image_api
/compute = compute_api

[pipeline:image_api]
pipeline = scoped_image glance

[filter:scoped_image]
use = egg:scoped-gateway#scoped
config_file = {config}
service_type = glance

[app:glance]
paste.app_factory = tests.middleware.test_wsgi:glance_factory
site = {site}

[composite:compute_api]
paste.composite_factory = tests.middleware.test_wsgi:mount_factory
/v2.1 = compute_v21

[pipeline:compute_v21]
pipeline = scoped_compute nova

[filter:scoped_compute]
paste.filter_factory = scoped_middleware.wsgi:filter_factory
config_file = {config}
service_type = nova

[app:nova]
paste.app_factory = tests.middleware.test_wsgi:nova_factory
site = {site}
"""

# ------------------------------------------------------------------------ serving


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Received:
    """One HTTP request that reached a WSGI server."""

    method: str
    path: str
    query: str
    headers: dict[str, str]


class Recorder:
    """Outermost app of a server: logs every HTTP request that reached it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received: list[Received] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.received.append(
            Received(
                environ["REQUEST_METHOD"],
                environ.get("PATH_INFO", ""),
                environ.get("QUERY_STRING", ""),
                _headers_of(environ),
            )
        )
        result: Iterable[bytes] = self.app(environ, start_response)
        return result


class Dispatch:
    """``/identity`` to the wrapped keystone app, the rest to the paste app."""

    def __init__(self, identity: Any, rest: Any) -> None:
        self.identity = identity
        self.rest = rest

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/identity" or path.startswith("/identity/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/identity"
            environ["PATH_INFO"] = path[len("/identity") :]
            result: Iterable[bytes] = self.identity(environ, start_response)
            return result
        result = self.rest(environ, start_response)
        return result


@contextlib.contextmanager
def wsgi_server(app: Any, port: int = 0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 with a thread per request; stop it on exit."""
    server = make_server(
        "127.0.0.1", port, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def site_yaml(name: str, urls: dict[str, str], down_port: int) -> str:
    lines = [
        f"site: {name}",
        "timeouts: {connect: 1.0, total: 10.0}",
        "circuit: {probe_interval: 0.2}",
        "sites:",
    ]
    for site, url in [*urls.items(), (DOWN, f"http://127.0.0.1:{down_port}")]:
        endpoints = ", ".join(f"{s}: '{url}/{s}'" for s in ("image", "compute", "identity"))
        lines.append(f"  {site}: {{endpoints: {{{endpoints}}}}}")
    return "\n".join(lines) + "\n"


@dataclass
class Fed:
    urls: dict[str, str]
    recorders: dict[str, Recorder]
    filters: dict[str, list[ScopedFilter]]
    plain: SiteData
    configs: dict[str, Path]

    def url(self, site: str, path: str) -> str:
        return self.urls[site] + path

    def apps(self, site: str) -> SiteApps:
        return APPS[site]

    def reset(self) -> None:
        for name in FILTER_SITES:
            apps = APPS[name]
            for app in (apps.glance, apps.nova, apps.keystone):
                app.log.reset()
            apps.glance.images[:] = make_items("img", 5, seed=f"{name}/img")
            self.recorders[name].received.clear()
        self.plain.received.clear()
        self.plain.reset_faults()
        for fs in self.filters.values():
            for f in fs:
                f.gateway.circuits.reset()


def _filters_in(app: Any) -> list[ScopedFilter]:
    """The ScopedFilter instances inside a loaded paste app (for teardown)."""
    found: list[ScopedFilter] = []
    todo = [app]
    while todo:
        item = todo.pop()
        if isinstance(item, ScopedFilter):
            found.append(item)
        elif isinstance(item, Mount):
            todo.extend(a for _, a in item.apps)
    return found


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    tmp = tmp_path_factory.mktemp("wsgi")
    plain = SiteData(PLAIN, images=make_items("img", 3, seed="Lyon/img"))
    plain.servers.extend(make_items("vm", 2, seed="Lyon/vm"))
    ports = {name: free_port() for name in FILTER_SITES}
    down = free_port()
    with serve_sites_in_thread([plain]) as plain_urls, contextlib.ExitStack() as stack:
        urls = {name: f"http://127.0.0.1:{ports[name]}" for name in FILTER_SITES}
        urls[PLAIN] = plain_urls[PLAIN]
        recorders: dict[str, Recorder] = {}
        filters: dict[str, list[ScopedFilter]] = {}
        configs: dict[str, Path] = {}
        try:
            for name in FILTER_SITES:
                config = tmp / f"{name}.yaml"
                config.write_text(site_yaml(name, urls, down))
                configs[name] = config
                ini = tmp / f"{name}-api-paste.ini"
                ini.write_text(INI.format(config=config, site=name))
                paste_app = loadapp(f"config:{ini}")
                identity = wrap(_apps(name).keystone, config_file=config, service_type="keystone")
                filters[name] = [*_filters_in(paste_app), identity]
                recorders[name] = Recorder(Dispatch(identity, paste_app))
                stack.enter_context(wsgi_server(recorders[name], ports[name]))
            yield Fed(urls, recorders, filters, plain, configs)
        finally:
            stack.close()
            for fs in filters.values():
                for f in fs:
                    f.close()
            scoped_wsgi.shutdown()


@pytest.fixture
def net(fed: Fed) -> Iterator[Fed]:
    fed.reset()
    yield fed
    fed.reset()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def image_ids(resp: httpx.Response) -> list[str]:
    return [i["id"] for i in resp.json()["images"]]


def scoped(scope: str) -> dict[str, str]:
    return {"X-Scope": scope}


# ------------------------------------------------------------------ entry point


def test_the_pipeline_holds_the_filter_from_both_entry_point_forms(fed: Fed) -> None:
    kinds = sorted(f.service for f in fed.filters["Berlin"])
    assert kinds == ["compute", "identity", "image"]  # glance, nova, keystone normalised
    image = next(f for f in fed.filters["Berlin"] if f.service == "image")
    compute = next(f for f in fed.filters["Berlin"] if f.service == "compute")
    identity = next(f for f in fed.filters["Berlin"] if f.service == "identity")
    assert (image.root, compute.root, identity.root) == ("/image", "/compute", "/identity")
    assert image.config.backends["image"].startswith("wsgi-local://")


BAD_OPTIONS = [
    ("", "config_file = {config}\n", "'service_type': required"),
    ("", "service_type = image\n", "'config_file': required"),
    ("", "config_file = {config}\nservice_type = imagee\n", "'imagee'; did you mean 'image'"),
    ("", "config_file = {config}\nservice_type = image\nconfig_fle = x\n", "did you mean"),
    ("", "config_file = {config}\nservice_type = image\nservice_root = image\n", "'/'"),
    ("", "config_file = /nonexistent/scoped.yaml\nservice_type = image\n", "cannot read"),
    ("bad", "config_file = {config}\nservice_type = image\n", "sites.Denver"),
]


@pytest.mark.parametrize(("yaml_kind", "options", "expected"), BAD_OPTIONS)
def test_bad_options_fail_at_load_with_an_error_naming_them(
    tmp_path: Path, yaml_kind: str, options: str, expected: str
) -> None:
    config = tmp_path / "scoped.yaml"
    if yaml_kind == "bad":
        config.write_text("site: Berlin\nsites:\n  Berlin: {}\n  Denver: {endpoints: {}}\n")
    else:
        config.write_text("site: Berlin\nsites:\n  Berlin: {}\n")
    ini = tmp_path / "api-paste.ini"
    ini.write_text(
        "[pipeline:main]\npipeline = scoped app\n\n"
        "[filter:scoped]\nuse = egg:scoped-gateway#scoped\n"
        + options.format(config=config)
        + "\n[app:app]\npaste.app_factory = tests.middleware.test_wsgi:glance_factory\n"
        "site = Nowhere\n"
    )
    with pytest.raises(ConfigError) as err:
        loadapp(f"config:{ini}")
    print(err.value)
    assert expected in str(err.value)


def test_a_relative_config_file_is_read_beside_the_ini_file(tmp_path: Path) -> None:
    (tmp_path / "scoped.yaml").write_text("site: Berlin\nsites:\n  Berlin: {}\n")
    ini = tmp_path / "api-paste.ini"
    ini.write_text(
        "[pipeline:main]\npipeline = scoped app\n\n"
        "[filter:scoped]\npaste.filter_factory = scoped_middleware.wsgi:filter_factory\n"
        "config_file = scoped.yaml\nservice_type = volumev3\nservice_root = /volume/\n\n"
        "[app:app]\npaste.app_factory = tests.middleware.test_wsgi:glance_factory\n"
        "site = Nowhere\n"
    )
    app = loadapp(f"config:{ini}")
    assert isinstance(app, ScopedFilter)
    assert (app.service, app.root) == ("block-storage", "/volume")


# ------------------------------------------------------------------- fast path


def test_no_scope_goes_straight_into_the_app_with_the_gateways_headers(
    net: Fed, client: httpx.Client
) -> None:
    resp = client.get(net.url("Berlin", "/image/v2/images"), headers={"X-Auth-Token": "tok"})
    assert resp.status_code == 200
    assert image_ids(resp) == [i["id"] for i in net.apps("Berlin").glance.images]
    # The gateway's answer for a request with no scope, exactly.
    assert resp.headers["x-scope"] == "<*: Berlin>"
    assert sites_of(resp) == {"Berlin": "200"}
    (seen,) = net.apps("Berlin").glance.log.calls
    assert seen.headers["x-auth-token"] == "tok"
    assert "x-openstack-request-id" not in seen.headers  # untouched: no core on this path
    assert len(net.recorders["Berlin"].received) == 1
    assert all(not net.recorders[n].received for n in ("Denver", "Paris"))
    assert net.apps("Berlin").glance.log.all_closed()


def test_the_app_s_own_scope_headers_are_replaced(net: Fed, client: httpx.Client) -> None:
    resp = client.get(net.url("Berlin", "/compute/v2.1/servers"))
    assert resp.status_code == 200
    assert resp.headers.get_list("x-scope") == ["<*: Berlin>"]


# ------------------------------------------------------------------ local leaf


def test_the_local_leaf_calls_the_app_in_process(net: Fed, client: httpx.Client) -> None:
    resp = client.get(
        net.url("Berlin", "/image/v2/images?limit=2"), headers=scoped("<glance: Berlin>")
    )
    assert resp.status_code == 200
    assert resp.headers["x-scope"] == "<image: Berlin, *: Berlin>"
    assert sites_of(resp) == {"Berlin": "200"}
    assert len(image_ids(resp)) == 2
    (seen,) = net.apps("Berlin").glance.log.calls
    # The path the app expects, from a copy of the environ.
    assert (seen.script_name, seen.path_info, seen.query) == ("/image", "/v2/images", "limit=2")
    assert "x-scoped-hop" not in seen.headers
    # One HTTP request reached Berlin: the client's. No hop to itself, none elsewhere.
    assert len(net.recorders["Berlin"].received) == 1
    assert all(not net.recorders[n].received for n in ("Denver", "Paris"))
    assert not net.plain.received
    assert net.apps("Berlin").glance.log.all_closed()


def test_the_local_leaf_of_a_nested_urlmap_keeps_its_script_name(
    net: Fed, client: httpx.Client
) -> None:
    resp = client.get(
        net.url("Berlin", "/compute/v2.1/echo/a%20b?x=1&y=%2F"), headers=scoped("<nova: Berlin>")
    )
    assert resp.status_code == 200, resp.text
    echo = resp.json()
    assert (echo["script_name"], echo["path_info"]) == ("/compute/v2.1", "/echo/a b")
    assert echo["query"] == "x=1&y=%2F"


def test_a_write_body_reaches_the_app_in_process(net: Fed, client: httpx.Client) -> None:
    resp = client.post(
        net.url("Berlin", "/image/v2/images"),
        json={"name": "debian"},
        headers=scoped("<image: Berlin>"),
    )
    assert resp.status_code == 201
    assert resp.json()["name"] == "debian"
    (seen,) = net.apps("Berlin").glance.log.calls
    assert json.loads(seen.body) == {"name": "debian"}
    assert seen.headers.get("x-openstack-request-id", "").startswith("req-")


# ----------------------------------------------------------------- forwarding


def test_a_remote_site_serves_it_through_its_own_filter(net: Fed, client: httpx.Client) -> None:
    resp = client.get(
        net.url("Berlin", "/compute/v2.1/echo/x?q=1"),
        headers={**scoped("<nova: Denver>"), "X-Custom": "kept"},
    )
    assert resp.status_code == 200
    echo = resp.json()
    assert echo["site"] == "Denver"
    assert (echo["script_name"], echo["path_info"], echo["query"]) == (
        "/compute/v2.1",
        "/echo/x",
        "q=1",
    )
    assert echo["headers"]["x-custom"] == "kept"
    assert "x-scoped-hop" not in echo["headers"]  # Denver's filter served it locally
    (hop,) = net.recorders["Denver"].received
    assert hop.path == "/compute/v2.1/echo/x"
    assert hop.headers["x-scoped-hop"] == "Berlin>Denver"
    assert not net.apps("Berlin").nova.log.calls
    assert sites_of(resp) == {"Denver": "200"}


def test_a_site_without_the_filter_gets_the_hop_mark(net: Fed, client: httpx.Client) -> None:
    resp = client.get(net.url("Berlin", "/image/v2/images"), headers=scoped("<image: Lyon>"))
    assert resp.status_code == 200
    assert len(image_ids(resp)) == 3
    (seen,) = net.plain.received
    assert seen.path == "/image/v2/images"
    assert seen.headers["x-scoped-hop"] == "Berlin>Lyon"


def test_the_scope_on_the_token_routes_the_request(net: Fed, client: httpx.Client) -> None:
    token = attach("tok", "<image: Paris>")
    resp = client.get(net.url("Berlin", "/image/echo/t"), headers={"X-Auth-Token": token})
    assert resp.status_code == 200
    echo = resp.json()
    assert echo["site"] == "Paris"
    # A service other than identity keeps the scope on the token, completed
    # with the home site (issue 14): Paris reads the scope the user meant.
    assert echo["headers"]["x-auth-token"] == attach("tok", "<image: Paris, *: Berlin>")


def test_a_request_marked_for_another_site_is_refused(net: Fed, client: httpx.Client) -> None:
    resp = client.get(
        net.url("Berlin", "/image/v2/images"), headers={"X-Scoped-Hop": "Denver>Paris"}
    )
    assert resp.status_code == 421
    assert "Paris" in resp.json()["error"]["message"]
    assert not net.apps("Berlin").glance.log.calls


def test_a_bad_scope_is_an_openstack_error(net: Fed, client: httpx.Client) -> None:
    resp = client.get(net.url("Berlin", "/image/v2/images"), headers=scoped("<image: Berln>"))
    assert resp.status_code == 400
    assert "did you mean 'Berlin'" in resp.json()["error"]["message"]
    assert resp.headers["x-scope"] == "<*: Berlin>"
    assert not net.apps("Berlin").glance.log.calls


def _image_filter(fed: Fed, site: str = "Berlin") -> ScopedFilter:
    return next(f for f in fed.filters[site] if f.service == "image")


def test_a_body_of_unknown_length_streams_to_the_site(net: Fed) -> None:
    # A chunked request body: no CONTENT_LENGTH, wsgi.input_terminated (PEP 3333
    # servers that support it, e.g. uWSGI, mod_wsgi, gunicorn).
    data = bytes(range(256)) * 1024  # 256 KiB: more than is read at once
    req = webob.Request.blank("/image/echo/up", method="PUT", headers=scoped("<image: Lyon>"))
    req.body_file_raw = io.BytesIO(data)
    req.environ.pop("CONTENT_LENGTH", None)
    req.environ["wsgi.input_terminated"] = True
    resp = req.get_response(_image_filter(net))
    assert resp.status_int == 200, resp.body
    assert resp.json["body_length"] == len(data)
    (seen,) = net.plain.received
    assert seen.body_sha256 == hashlib.sha256(data).hexdigest()


def test_head_through_the_local_leaf(net: Fed, client: httpx.Client) -> None:
    resp = client.head(net.url("Berlin", "/image/v2/images"), headers=scoped("<image: Berlin>"))
    assert resp.status_code == 200
    assert resp.content == b""
    assert sites_of(resp) == {"Berlin": "200"}
    assert net.apps("Berlin").glance.log.all_closed()


def test_a_scoped_path_outside_the_service_root_is_refused(net: Fed) -> None:
    app = _image_filter(net)
    resp = webob.Request.blank("/elsewhere/v2", headers=scoped("<image: Denver>")).get_response(app)
    assert resp.status_int == 404
    assert "outside the root '/image'" in resp.json["error"]["message"]
    assert not net.recorders["Denver"].received


# ------------------------------------------------------------- merge, paging


def test_a_fan_out_merges_local_and_remote_lists(net: Fed, client: httpx.Client) -> None:
    resp = client.get(
        net.url("Berlin", "/image/v2/images"), headers=scoped("<image: Berlin&Denver&Lyon>")
    )
    assert resp.status_code == 200
    ids = image_ids(resp)
    expected = [i["id"] for n in ("Berlin", "Denver") for i in net.apps(n).glance.images]
    assert ids[:10] == expected
    assert set(ids[10:]) == {i["id"] for i in net.plain.images}
    assert sites_of(resp) == {"Berlin": "200", "Denver": "200", "Lyon": "200"}
    assert len(net.recorders["Berlin"].received) == 1  # Berlin's part in-process
    assert len(net.recorders["Denver"].received) == 1
    assert net.apps("Berlin").glance.log.all_closed()
    assert net.apps("Denver").glance.log.all_closed()


def test_a_local_answer_read_as_a_stream_is_merged(net: Fed, client: httpx.Client) -> None:
    net.apps("Berlin").glance.log.streamed_json = True  # a generator, no Content-Length
    resp = client.get(
        net.url("Berlin", "/image/v2/images"), headers=scoped("<image: Berlin&Denver>")
    )
    assert resp.status_code == 200
    expected = [i["id"] for n in ("Berlin", "Denver") for i in net.apps(n).glance.images]
    assert image_ids(resp) == expected
    assert net.apps("Berlin").glance.log.all_closed()


def test_the_legacy_write_callable_and_a_generator_body_keep_their_order(
    fed: Fed,
) -> None:
    closed: list[bool] = []

    def legacy(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one ")
        try:
            yield b"two "
            write(b"three ")
            yield b"four"
        finally:
            closed.append(True)

    app = wrap(legacy, config_file=fed.configs["Berlin"], service_type="image")
    for headers in ({}, scoped("<image: Berlin>")):
        closed.clear()
        resp = webob.Request.blank("/image/x", headers=headers).get_response(app)
        assert resp.status_int == 200
        if headers:
            assert resp.body == b"one two three four"
            assert resp.headers["X-Scope-Sites"].startswith("Berlin=200;t=")
        assert closed == [True]
    app.close()


def test_paging_through_a_fan_out_returns_every_item_once(net: Fed, client: httpx.Client) -> None:
    expected = {i["id"] for n in FILTER_SITES for i in net.apps(n).glance.images}
    seen: list[str] = []
    url = net.url("Berlin", "/image/v2/images?limit=4")
    pages = 0
    while url:
        resp = client.get(url, headers=scoped("<image: Berlin&Denver&Paris>"))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["images"]) <= 4
        seen.extend(i["id"] for i in body["images"])
        nxt = body.get("next")
        url = net.url("Berlin", "/image" + nxt) if nxt else ""
        pages += 1
        assert pages < 20
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(expected)
    # Berlin's own pages were asked in-process, with its own marker in the query.
    berlin_queries = [c.query for c in net.apps("Berlin").glance.log.calls]
    assert any("marker=" in q and "sc1." not in q for q in berlin_queries)
    assert len(net.recorders["Berlin"].received) == pages


def test_reading_one_resource_finds_the_site_that_has_it(net: Fed, client: httpx.Client) -> None:
    image_id = net.apps("Denver").glance.images[0]["id"]
    resp = client.get(
        net.url("Berlin", f"/image/v2/images/{image_id}"), headers=scoped("<image: Berlin&Denver>")
    )
    assert resp.status_code == 200
    assert resp.json()["id"] == image_id
    assert sites_of(resp) == {"Berlin": "404", "Denver": "200"}


def test_a_write_to_a_fan_out_is_done_at_every_site(net: Fed, client: httpx.Client) -> None:
    resp = client.post(
        net.url("Berlin", "/image/v2/images"),
        json={"name": "everywhere"},
        headers=scoped("<image: Berlin&Denver>"),
    )
    assert resp.status_code == 201
    image = resp.json()
    assert image["OS-SCOPE:sites"] == {"Berlin": image["id"], "Denver": image["id"]}
    for name in ("Berlin", "Denver"):
        # Glance takes the client's ID: the gateway chose one for every replica.
        assert net.apps(name).glance.images[-1] == {"id": image["id"], "name": "everywhere"}


# ------------------------------------------------------- failover, optional


def test_failover_past_a_site_that_is_down(net: Fed, client: httpx.Client) -> None:
    resp = client.get(net.url("Berlin", "/image/v2/images"), headers=scoped("<image: Oslo|Denver>"))
    assert resp.status_code == 200
    assert image_ids(resp) == [i["id"] for i in net.apps("Denver").glance.images]
    assert sites_of(resp) == {"Oslo": "refused", "Denver": "200"}


def test_failover_past_the_local_app_failing(net: Fed, client: httpx.Client) -> None:
    net.apps("Berlin").glance.log.fail_status = 503
    resp = client.get(
        net.url("Berlin", "/image/v2/images"), headers=scoped("<image: Berlin|Paris>")
    )
    assert resp.status_code == 200
    assert image_ids(resp) == [i["id"] for i in net.apps("Paris").glance.images]
    assert sites_of(resp) == {"Berlin": "503", "Paris": "200"}
    assert net.apps("Berlin").glance.log.all_closed()  # the discarded answer too


def test_the_local_app_has_a_circuit_that_a_probe_closes(net: Fed, client: httpx.Client) -> None:
    log = net.apps("Berlin").glance.log
    log.fail_status = 503
    url, headers = net.url("Berlin", "/image/v2/images"), scoped("<image: Berlin|Paris>")
    # At most circuit.failures (3) 503s in a row open the local app's circuit
    # (fewer if an earlier test left a failure in the count).
    outcomes = []
    for _ in range(4):
        resp = client.get(url, headers=headers)
        outcomes.append(sites_of(resp))
        if outcomes[-1]["Berlin"] == "skipped":
            break
    assert outcomes[-1] == {"Berlin": "skipped", "Paris": "200"}
    assert all(o == {"Berlin": "503", "Paris": "200"} for o in outcomes[:-1])
    assert len(log.calls) == len(outcomes) - 1 <= 3
    log.fail_status = None
    # The core's health probe of an in-process app finds it up: the circuit
    # closes and Berlin serves again.
    deadline = time.monotonic() + 20
    while sites_of(resp).get("Berlin") != "200":
        assert time.monotonic() < deadline, resp.headers["x-scope-sites"]
        time.sleep(0.05)
        resp = client.get(url, headers=headers)
    assert image_ids(resp) == [i["id"] for i in net.apps("Berlin").glance.images]


def test_an_exception_in_the_local_app_is_a_failure_of_this_site(
    net: Fed, client: httpx.Client
) -> None:
    net.apps("Berlin").glance.log.explode = True
    url = net.url("Berlin", "/image/v2/images")
    alone = client.get(url, headers=scoped("<image: Berlin>"))
    assert alone.status_code == 502
    assert "Berlin" in alone.json()["error"]["message"]
    assert sites_of(alone) == {"Berlin": "error"}
    failover = client.get(url, headers=scoped("<image: Berlin|Denver>"))
    assert failover.status_code == 200
    assert sites_of(failover) == {"Berlin": "error", "Denver": "200"}


def test_an_optional_site_that_fails_is_left_out(net: Fed, client: httpx.Client) -> None:
    resp = client.get(
        net.url("Berlin", "/image/v2/images"), headers=scoped("<image: Berlin&Oslo?>")
    )
    assert resp.status_code == 200
    assert image_ids(resp) == [i["id"] for i in net.apps("Berlin").glance.images]
    assert sites_of(resp) == {"Berlin": "200", "Oslo": "refused"}


def test_a_required_site_that_fails_fails_the_fan_out(net: Fed, client: httpx.Client) -> None:
    net.apps("Denver").glance.log.fail_status = 500
    resp = client.get(
        net.url("Berlin", "/image/v2/images"), headers=scoped("<image: Berlin&Denver>")
    )
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["code"] == 502
    assert {s["site"]: s["outcome"] for s in error["sites"]} == {"Berlin": "200", "Denver": "500"}
    assert net.apps("Berlin").glance.log.all_closed()


# ---------------------------------------------------------------- identity


def test_identity_gets_bare_tokens_in_process(net: Fed, client: httpx.Client) -> None:
    scope = "<identity: Berlin>"
    resp = client.get(
        net.url("Berlin", "/identity/v3/auth/tokens"),
        headers={"X-Auth-Token": attach("svc", scope), "X-Subject-Token": attach("usr", scope)},
    )
    assert resp.status_code == 200
    body = resp.json()
    assert (body["site"], body["x-auth-token"], body["x-subject-token"]) == ("Berlin", "svc", "usr")
    assert len(net.recorders["Berlin"].received) == 1


def test_token_validation_follows_the_subject_token_to_its_site(
    net: Fed, client: httpx.Client
) -> None:
    # The validating service's own token carries no scope; the subject's does.
    subject = attach("usr", "<identity: Denver>")
    resp = client.get(
        net.url("Berlin", "/identity/v3/auth/tokens"),
        headers={"X-Auth-Token": "svc", "X-Subject-Token": subject},
    )
    assert resp.status_code == 200
    body = resp.json()
    assert (body["site"], body["x-subject-token"]) == ("Denver", "usr")
    assert not net.apps("Berlin").keystone.log.calls


def test_identity_without_a_scope_takes_the_fast_path(net: Fed, client: httpx.Client) -> None:
    resp = client.get(net.url("Berlin", "/identity/v3/users"), headers={"X-Auth-Token": "svc"})
    assert resp.status_code == 200
    assert resp.json()["x-auth-token"] == "svc"
    assert resp.headers["x-scope"] == "<*: Berlin>"


# -------------------------------------------------------------- concurrency


def test_a_fan_out_asks_the_sites_concurrently(net: Fed, client: httpx.Client) -> None:
    for name in FILTER_SITES:
        net.apps(name).glance.log.delay = 1.0
    net.plain.delay = 1.0
    began = time.monotonic()
    resp = client.get(
        net.url("Berlin", "/image/v2/images"), headers=scoped("<image: Berlin&Denver&Paris&Lyon>")
    )
    elapsed = time.monotonic() - began
    assert resp.status_code == 200
    calls = [net.apps(n).glance.log.calls[0] for n in FILTER_SITES]
    # Each site was still handling its call when the last one started: the
    # local app (on the request's thread) and the remote sites ran together.
    assert max(c.started for c in calls) < min(c.ended for c in calls)
    print(f"\n& over 4 sites each 1 s away: {elapsed:.2f} s (the sum would be 4 s)")


def test_many_requests_at_once_through_one_process(net: Fed) -> None:
    def one(i: int) -> tuple[int, int]:
        with httpx.Client(timeout=30) as c:
            scope = "<image: Berlin&Denver>" if i % 2 else "<image: Paris|Berlin>"
            resp = c.get(net.url("Berlin", "/image/v2/images"), headers=scoped(scope))
            return resp.status_code, len(resp.json()["images"])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(48)))
    assert all(status == 200 for status, _ in results)
    assert {n for _, n in results} == {5, 10}
    for name in FILTER_SITES:
        assert net.apps(name).glance.log.all_closed()


# ---------------------------------------------------------------- iterables


def test_the_app_iterable_is_closed_when_the_client_goes_away(
    net: Fed, client: httpx.Client
) -> None:
    size = 256 * 1024 * 1024
    for scope in ("<image: Berlin>", "<image: Denver>"):
        url = net.url("Berlin", f"/image/v2/images/x/file?size={size}")
        with client.stream("GET", url, headers=scoped(scope)) as resp:
            assert resp.status_code == 200
            stream = resp.iter_raw()
            next(stream)
        # The client closed its connection mid-body: the server's write fails
        # and it closes our iterable, which closes the app's (and, for a
        # remote site, the connection to it, whose server closes its app's).
        site = scope[8:-1]
        assert net.apps(site).glance.log.all_closed(wait=20)
        assert net.apps(site).glance.log.opened == 1


# ------------------------------------------------------------- in a process


def serve_main(ini: str, port: int) -> None:
    """Serve a paste app on a port until killed (the streaming test's process)."""
    app = loadapp(f"config:{ini}")
    with wsgi_server(app, port):
        print("ready", flush=True)
        threading.Event().wait()


def fork_main(ini: str) -> None:
    """Use the filter, fork, and use it again in the child (uwsgi, mod_wsgi)."""
    app = loadapp(f"config:{ini}")
    headers = {"X-Scope": "<image: Denver>"}
    first = webob.Request.blank("/image/v2/images", headers=headers).get_response(app)
    assert first.status_int == 200, first.body
    pid = os.fork()
    if pid == 0:  # the child: a loop thread of its own, a client of its own
        code = 3
        try:
            again = webob.Request.blank("/image/v2/images", headers=headers).get_response(app)
            code = 0 if again.status_int == 200 and again.json["images"] else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    after = webob.Request.blank("/image/v2/images", headers=headers).get_response(app)
    print(f"child={os.waitstatus_to_exitcode(status)} parent={after.status_int}", flush=True)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _process_ini(tmp: Path, remote: str, name: str = "Berlin") -> Path:
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"site: {name}\nsites:\n  {name}: {{endpoints: {{image: 'http://127.0.0.1:1/image'}}}}\n"
        f"  Denver: {{endpoints: {{image: '{remote}/image'}}}}\n"
    )
    ini = tmp / f"{name}.ini"
    ini.write_text(INI.format(config=config, site=name))
    return ini


def test_the_filter_works_in_a_forked_child(tmp_path: Path) -> None:
    denver = SiteData("Denver", images=make_items("img", 2, seed="D"))
    with serve_sites_in_thread([denver]) as urls:
        ini = _process_ini(tmp_path, urls["Denver"])
        out = subprocess.run(
            _python(f"from tests.middleware.test_wsgi import fork_main; fork_main({str(ini)!r})"),
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "child=0 parent=200"
    assert len(denver.received) == 3


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _download(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with client.stream("GET", url, headers=headers) as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_raw(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _pattern_body(size: int) -> Iterator[bytes]:
    left = size
    while left > 0:
        take = min(left, len(PATTERN))
        yield PATTERN[:take]
        left -= take


TRANSFERS = [
    ("local download", "<image: Berlin>"),  # the app's iterable, in-process
    ("remote download", "<image: Denver>"),  # a remote site's body, over HTTP
    ("local upload", "<image: Berlin>"),  # wsgi.input -> core -> the app's wsgi.input
    ("remote upload", "<image: Denver>"),  # wsgi.input -> core -> HTTP
]


def test_large_bodies_stream_through_the_filter_in_bounded_memory(tmp_path: Path) -> None:
    size = 256 * 1024 * 1024
    max_growth = 64 * 1024 * 1024
    denver = SiteData("Denver", images=make_items("img", 1, seed="D"))
    image_id = denver.images[0]["id"]
    port = free_port()
    with serve_sites_in_thread([denver]) as urls:
        ini = _process_ini(tmp_path, urls["Denver"])
        code = (
            f"from tests.middleware.test_wsgi import serve_main; serve_main({str(ini)!r}, {port})"
        )
        proc = subprocess.Popen(
            _python(code), cwd=Path(__file__).parents[2], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            base = f"http://127.0.0.1:{port}/image/v2/images"
            with httpx.Client(timeout=60) as client:
                warm = client.get(base, headers=scoped("<image: Berlin&Denver>"))
                assert warm.status_code == 200
                before = _peak_rss(proc.pid)
                figures: dict[str, float] = {}
                file_url = f"{base}/{image_id}/file"
                for label, scope in TRANSFERS:
                    began = time.monotonic()
                    if label.endswith("download"):
                        got = _download(client, f"{file_url}?size={size}", scoped(scope))
                        assert got == (size, pattern_sha256(size)), label
                    else:
                        resp = client.put(
                            file_url,
                            content=_pattern_body(size),
                            headers={**scoped(scope), "Content-Length": str(size)},
                        )
                        assert resp.status_code in (200, 204), resp.text
                        if scope == "<image: Berlin>":  # the app hashed what it read
                            assert resp.json() == {"size": size, "sha256": pattern_sha256(size)}
                    figures[label] = time.monotonic() - began
                (upload,) = denver.uploads
                assert (upload.size, upload.sha256) == (size, pattern_sha256(size))
                growth = _peak_rss(proc.pid) - before
        finally:
            proc.terminate()
            proc.wait(20)
    mib = size / (1024 * 1024)
    for label, seconds in figures.items():
        print(f"\n{label} of {mib:.0f} MiB through the filter: {mib / seconds:.0f} MiB/s")
    print(f"peak RSS growth of the WSGI process: {growth / (1024 * 1024):.1f} MiB")
    assert growth < max_growth


@pytest.mark.parametrize(
    ("environ", "honoured", "says"),
    [
        ({}, False, "over plain HTTP"),
        ({"HTTPS": "on", "SSL_CLIENT_VERIFY": "NONE"}, False, "presented none"),
        (
            {
                "HTTPS": "on",
                "SSL_CLIENT_VERIFY": "FAILED:unknown CA",
                "SSL_CLIENT_S_DN": "CN=Berlin",
            },
            False,
            "presented none",
        ),
        # A client's own header is HTTP_SSL_CLIENT_S_DN: never the server's word.
        ({"HTTPS": "on", "HTTP_SSL_CLIENT_S_DN": "CN=Berlin"}, False, "presented none"),
        (
            {"HTTPS": "on", "SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN": "CN=Denver,O=lab"},
            False,
            "certificate names 'Denver'",
        ),
        (
            {"HTTPS": "on", "SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN": "CN=Berlin,O=lab"},
            True,
            "",
        ),
    ],
)
def test_a_filter_under_mod_ssl_honours_a_hop_only_from_the_origins_certificate(
    tmp_path: Path, environ: dict[str, str], honoured: bool, says: str
) -> None:
    """A filter with ``tls.cert`` served by Apache's mod_ssl (``SSLVerifyClient
    optional``, ``SSLOptions +StdEnvVars``) reads the verified client
    certificate from the environ, as the gateway reads it from its server."""
    ca = Authority(tmp_path / "pki")
    paris = ca.issue("Paris")
    config = tmp_path / "scoped.yaml"
    sites = {
        n: {"endpoints": {"image": f"http://127.0.0.{i + 1}:9"}} for i, n in enumerate(FILTER_SITES)
    }
    tls = {"cert": paris.cert, "key": paris.key, "ca": ca.bundle}
    config.write_text(yaml.safe_dump({"site": "Paris", "sites": sites, "tls": tls}))
    seen: list[str] = []

    def glance(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"images": []}']

    app = wrap(glance, config_file=config, service_type="image")
    try:
        req = webob.Request.blank("/v2/images", headers={"X-Scoped-Hop": "Berlin>Paris"})
        req.environ.update(environ)
        resp = req.get_response(app)
    finally:
        app.close()
    if honoured:
        assert resp.status_int == 200, resp.text
        assert seen == ["/v2/images"]  # served here, by the service itself
    else:
        assert resp.status_int == 403, resp.text
        assert says in resp.json["error"]["message"]
        assert seen == []
