"""Stand-in Keystones for federation tests: each one an identity provider and
a service provider, speaking the HTTP of Keystone-to-Keystone (SAML2 ECP)
as keystoneauth1's ``Keystone2Keystone`` plugin drives it.

What a real pair does (``deploy/k2k-probe``, ``../shared/k2k-notes``):
Keystone A, given a token of its own and a service provider ID, answers an
ECP-wrapped SAML assertion signed with its key; B's mod_auth_mellon takes it
at the SP URL (303 and a session cookie), B's federated auth URL turns the
session into an unscoped token of B, which is then scoped to B's own
project. Here the "assertion" is a signed line of text (HMAC with A's key,
which B trusts as it would trust A's metadata): the protocol steps, the
trust, expiry, revocation and replay are what is emulated, not XML. Real
Keystones need Apache and mod_auth_mellon: the lab runs those.

Every request a stand-in got is kept (:attr:`Keystone.seen`): tests check
which tokens reached which site.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from tests.federation import free_port


@dataclass
class Token:
    user_id: str
    user_name: str
    project: dict[str, Any] | None
    expires: datetime
    methods: list[str]
    idp: str | None = None


@dataclass
class Keystone:
    """One site's Keystone: its users, projects, tokens, peers."""

    site: str
    url: str = ""
    key: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    projects: dict[str, str] = field(default_factory=dict)
    """name -> id, this Keystone's own IDs."""
    service_providers: dict[str, str] = field(default_factory=dict)
    """SP id -> the SP's base URL (where its Keystone and mellon answer)."""
    trusted: dict[str, bytes] = field(default_factory=dict)
    """IdP id -> its key (what a real SP learns from the IdP's metadata)."""
    tokens: dict[str, Token] = field(default_factory=dict)
    lifetime: timedelta = timedelta(hours=1)
    seen: list[tuple[str, str, dict[str, str], str]] = field(default_factory=list)
    """(method, path, headers, body) of every request."""
    used: set[str] = field(default_factory=set)
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)

    def project(self, name: str) -> str:
        return self.projects.setdefault(name, secrets.token_hex(16))

    def issue(self, user: str, project: str | None = "demo", idp: str | None = None) -> str:
        """A token of this Keystone (as a password login would give)."""
        token = secrets.token_hex(24)
        scoped = {"id": self.project(project), "name": project} if project else None
        self.tokens[token] = Token(
            f"{self.site}-{user}" if idp is None else f"{idp}:{user}",
            user,
            scoped,
            datetime.now(timezone.utc) + self.lifetime,
            ["password"] if idp is None else ["saml2"],
            idp,
        )
        return token

    def valid(self, token: str | None) -> Token | None:
        found = self.tokens.get(token or "")
        if found is None or found.expires <= datetime.now(timezone.utc):
            return None
        return found

    def revoke(self, token: str) -> None:
        self.tokens.pop(token, None)

    def trust(self, idp: Keystone) -> None:
        """``idp``'s users may come here (the SP side of a federation)."""
        self.trusted[idp.site] = idp.key

    def provide(self, sp: Keystone, sp_id: str | None = None) -> None:
        """Register ``sp`` as a service provider here (the IdP side)."""
        self.service_providers[sp_id or sp.site] = sp.url


def _body(k: Keystone, token: Token) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    body: dict[str, Any] = {
        "methods": token.methods,
        "expires_at": token.expires.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "issued_at": now.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "user": {
            "id": token.user_id,
            "name": token.user_name,
            "domain": {"id": "default", "name": "Default"},
        },
        "catalog": [],
    }
    if token.project is not None:
        body["project"] = {**token.project, "domain": {"id": "default", "name": "Default"}}
    if k.service_providers:
        body["service_providers"] = [
            {
                "id": sp_id,
                "auth_url": f"{url}/v3/OS-FEDERATION/identity_providers/{k.site}"
                "/protocols/saml2/auth",
                "sp_url": f"{url}/mellon/paosResponse",
            }
            for sp_id, url in k.service_providers.items()
        ]
    return {"token": body}


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def app_of(k: Keystone) -> web.Application:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        text = await request.text()  # kept by aiohttp for the handler
        k.seen.append((request.method, request.path, dict(request.headers), text))
        return await handler(request)  # type: ignore[no-any-return]

    async def version(request: web.Request) -> web.Response:
        href = f"{k.url}/v3/"
        doc = {"id": "v3.14", "status": "stable", "links": [{"rel": "self", "href": href}]}
        return web.json_response({"version": doc})

    async def issue(request: web.Request) -> web.Response:
        auth = (await request.json())["auth"]
        given = k.valid(auth["identity"].get("token", {}).get("id"))
        if given is None:
            return web.json_response({"error": {"code": 401, "message": "bad token"}}, status=401)
        project = (auth.get("scope") or {}).get("project")
        if project is not None:
            if project.get("name") not in k.projects:
                return web.json_response({"error": {"code": 401}}, status=401)
            scoped = {"id": k.projects[project["name"]], "name": project["name"]}
        else:
            scoped = None
        token = secrets.token_hex(24)
        k.tokens[token] = Token(
            given.user_id, given.user_name, scoped, given.expires, given.methods, given.idp
        )
        body = _body(k, k.tokens[token])
        return web.json_response(body, status=201, headers={"X-Subject-Token": token})

    async def validate(request: web.Request) -> web.Response:
        subject = request.headers.get("X-Subject-Token") or ""
        token = k.valid(subject)
        if k.valid(request.headers.get("X-Auth-Token")) is None:
            return web.json_response({"error": {"code": 401}}, status=401)
        if token is None:
            return web.json_response({"error": {"code": 404}}, status=404)
        return web.json_response(_body(k, token), headers={"X-Subject-Token": subject})

    async def ecp(request: web.Request) -> web.Response:
        auth = (await request.json())["auth"]
        token = k.valid(auth["identity"]["token"]["id"])
        sp = auth["scope"]["service_provider"]["id"]
        if token is None:
            return web.json_response({"error": {"code": 401}}, status=401)
        if token.project is None:  # as Keystone: the assertion names the project
            message = "Use a project scoped token when attempting to create a SAML assertion"
            return web.json_response({"error": {"code": 400, "message": message}}, status=400)
        if sp not in k.service_providers:
            return web.json_response({"error": {"code": 404}}, status=404)
        line = f"{k.site}|{sp}|{token.user_name}|{secrets.token_hex(8)}"
        return web.Response(text=f"{line}|{_sign(k.key, line)}")

    app = web.Application(middlewares=[record])
    app.router.add_get("/v3", version)
    app.router.add_get("/v3/", version)
    app.router.add_post("/v3/auth/tokens", issue)
    app.router.add_get("/v3/auth/tokens", validate)
    app.router.add_post("/v3/auth/OS-FEDERATION/saml2/ecp", ecp)
    _service_provider(k, app)
    return app


def _service_provider(k: Keystone, app: web.Application) -> None:
    """The SP side: mod_auth_mellon's PAOS endpoint, then the federated auth URL."""

    async def paos(request: web.Request) -> web.Response:
        text = await request.text()
        line, _, signature = text.rpartition("|")
        idp, sp, user, nonce = line.split("|")
        key = k.trusted.get(idp)
        if key is None or not hmac.compare_digest(_sign(key, line), signature):
            return web.Response(status=400, text="assertion not trusted")
        if sp != k.site or nonce in k.used:
            return web.Response(status=400, text="assertion not for this SP, or replayed")
        k.used.add(nonce)
        session = secrets.token_hex(8)
        k.sessions[session] = (idp, user)
        response = web.Response(status=303, headers={"Location": "/v3/k2k-relay"})
        response.set_cookie("mellon-cookie", session)
        return response

    async def federated(request: web.Request) -> web.Response:
        found = k.sessions.pop(request.cookies.get("mellon-cookie", ""), None)
        if found is None or found[0] != request.match_info["idp"]:
            return web.Response(status=303, headers={"Location": "/mellon/login"})
        token = k.issue(found[1], project=None, idp=found[0])
        body = _body(k, k.tokens[token])
        return web.json_response(body, status=201, headers={"X-Subject-Token": token})

    app.router.add_post("/mellon/paosResponse", paos)
    app.router.add_get("/v3/OS-FEDERATION/identity_providers/{idp}/protocols/saml2/auth", federated)


@contextmanager
def keystones(*sites: str) -> Iterator[dict[str, Keystone]]:
    """Stand-in Keystones on loopback, one thread and loop for all; each is
    the identity provider of every other and trusts every other."""
    found = {s: Keystone(s) for s in sites}
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []

    async def start() -> None:
        for k in found.values():
            port = free_port()
            k.url = f"http://127.0.0.1:{port}"
            runner = web.AppRunner(app_of(k), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    for idp in found.values():
        for sp in found.values():
            if sp is not idp:
                idp.provide(sp)
                sp.trust(idp)
    try:
        yield found
    finally:

        async def stop() -> None:
            for runner in runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
