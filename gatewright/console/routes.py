"""The console's routes: pages, session and the proxy to the public API.

Session: ``POST /ui/session`` exchanges a key for an opaque session id in an HttpOnly,
SameSite=Strict cookie. The session is kept in the store (``core.sessions``), so every worker and
replica knows it: found by the sha256 of the cookie's id, with the key sealed (AES-GCM) under a key
derived from that id, so the stored row opens nothing and shows no key without the cookie; the key
never reaches browser storage. ``GET /ui/session`` tells the page who is signed in and its CSRF
token (derived from the session id); every state-changing call (the proxy's POST/PATCH/DELETE,
adding a playground key, signing out) must carry that token in ``x-csrf-token``. Signing out
deletes the session everywhere; signing in again deletes the one the old cookie named.
``/ui/api/{path}`` forwards to the public route ``/{path}`` of this same application with
``Authorization: Bearer <session key>``, so the console sees exactly what any client of the API
sees.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import Message, Receive, Scope, Send

from gatewright.api.openapi import Endpoint, Operation
from gatewright.core.clock import utcnow
from gatewright.core.sessions import SessionRow, SessionStore

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "gw_console"
SESSION_SECONDS = 8 * 3600  # a session ends after this, or on sign-out
CSRF_HEADER = "x-csrf-token"
PLAYGROUND_HEADER = "x-console-key"  # "playground": use the session's playground key, not the sign-in key
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PREFIXES = ("/v1/", "/v2/")  # what the proxy forwards to: the public API, nothing else

# Pages hold keys in memory only and are never cached or framed; scripts come from /ui/static only.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}


def _derived(sid: str, purpose: bytes) -> bytes:
    """A secret of the session for one purpose, from its cookie's id (256 random bits)."""
    return hmac.new(sid.encode(), purpose, hashlib.sha256).digest()


def _id_hash(sid: str) -> str:
    return hashlib.sha256(b"gatewright console session " + sid.encode()).hexdigest()


def _seal(sid: str, secret: str) -> str:
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_derived(sid, b"seal")).encrypt(nonce, secret.encode(), _id_hash(sid).encode())
    return base64.b64encode(nonce + sealed).decode()


def _unseal(sid: str, sealed: str) -> str | None:
    raw = base64.b64decode(sealed)
    try:
        return AESGCM(_derived(sid, b"seal")).decrypt(raw[:12], raw[12:], _id_hash(sid).encode()).decode()
    except InvalidTag:  # not sealed under this id: no session
        return None


@dataclass(frozen=True, slots=True)
class Session:
    sid: str  # the cookie's id: only the browser holds it
    key: str
    kind: str
    prefix: str
    playground_key: str | None = None

    @property
    def csrf(self) -> str:
        return base64.urlsafe_b64encode(_derived(self.sid, b"csrf")).decode().rstrip("=")


def _store(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.console_sessions
    return store


async def open_session(request: Request, key: str, kind: str, prefix: str) -> str:
    """A new session for ``key``; returns the cookie's id. Expired sessions are swept here."""
    store, now = _store(request), utcnow()
    await store.remove_expired(now)
    sid = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=SESSION_SECONDS)
    await store.insert(SessionRow(_id_hash(sid), kind, prefix, _seal(sid, key), None, now, expires))
    return sid


async def session_of(request: Request) -> Session | None:
    """The request's session (by its cookie), unless it has ended."""
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    row = await _store(request).get(_id_hash(sid), utcnow())
    if row is None:
        return None
    key = _unseal(sid, row.sealed_key)
    if key is None:
        return None
    playground = _unseal(sid, row.sealed_playground_key) if row.sealed_playground_key else None
    return Session(sid, key, row.kind, row.prefix, playground)


def _json(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(json.dumps(body), status, {**SECURITY_HEADERS, **headers}, media_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json({"error": {"message": message, "type": "console_error", "param": None, "code": code}}, status)


def _csrf_ok(request: Request, session: Session) -> bool:
    sent = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(sent.encode(), session.csrf.encode())


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS, media_type="text/html")


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    path = (STATIC / name).resolve()
    if STATIC not in path.parents or not path.is_file() or path.suffix not in STATIC_TYPES:
        return _error(404, "not_found", "No such console file.")
    headers = {**SECURITY_HEADERS, "cache-control": "no-cache"}
    return FileResponse(path, headers=headers, media_type=STATIC_TYPES[path.suffix])


async def _who(request: Request, key: str) -> tuple[str, str] | Response:
    """The key's kind and prefix, from the public API: ``GET /v1/key`` (any key of an account
    reads itself), else ``GET /v1/admin/codes`` (only the operator's credential may)."""
    status, body = await _call(request, "GET", "/v1/key", key)
    if status == 200:
        data = body["data"]
        return str(data.get("kind", "api")), str(data["prefix"])
    operator, _ = await _call(request, "GET", "/v1/admin/codes?limit=1", key)
    if operator == 200:
        return "operator", key.partition("-")[2][:8]
    error = body.get("error", {}) if isinstance(body, dict) else {}
    return _error(401, error.get("code") or "invalid_api_key", error.get("message") or "That key is not valid.")


async def sign_in(request: Request) -> Response:
    # A cross-site form can post a JSON-shaped text/plain body, never an application/json one (that
    # needs a CORS preflight, never granted): no page elsewhere signs a browser in to its own key.
    if request.headers.get("content-type", "").partition(";")[0].strip().lower() != "application/json":
        return _error(415, "invalid_content_type", 'Send {"key": …} as application/json.')
    try:
        key = (await request.json()).get("key", "")
    except (ValueError, AttributeError):
        key = None
    if not isinstance(key, str) or not key.strip():
        return _error(400, "invalid_value", 'Send {"key": "<an API or management key>"}.')
    found = await _who(request, key.strip())
    if isinstance(found, Response):
        return found
    kind, prefix = found
    replaced = request.cookies.get(COOKIE)
    if replaced:  # the browser's cookie is overwritten: the session it named would live on unheld
        await _store(request).delete(_id_hash(replaced))
    sid = await open_session(request, key.strip(), kind, prefix)
    response = _json({"kind": kind, "prefix": prefix})
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", secure=secure, path="/ui")
    return response


async def who_am_i(request: Request) -> Response:
    session = await session_of(request)
    if session is None:  # not an error: the page asks this to know whether to show the sign-in form
        return _json({"signed_in": False})
    return _json(
        {
            "signed_in": True,
            "kind": session.kind,
            "prefix": session.prefix,
            "csrf": session.csrf,
            "playground_key": session.playground_key is not None,
        }
    )


async def sign_out(request: Request) -> Response:
    session = await session_of(request)
    if session is not None:
        if not _csrf_ok(request, session):
            return _error(403, "csrf", "Missing or wrong CSRF token.")
        await _store(request).delete(_id_hash(session.sid))  # on every worker and replica at once
    response = _json({"signed_out": True})
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


async def playground_key(request: Request) -> Response:
    """Remember an API key of the account for this session's playground (a management key cannot
    call models); it is checked to be an API key of the same account through the public API."""
    session = await session_of(request)
    if session is None:
        return _error(401, "not_signed_in", "Sign in first.")
    if not _csrf_ok(request, session):
        return _error(403, "csrf", "Missing or wrong CSRF token.")
    try:
        key = (await request.json()).get("key", "")
    except (ValueError, AttributeError):
        key = None
    if not isinstance(key, str) or not key.strip():
        return _error(400, "invalid_value", 'Send {"key": "<an API key>"}.')
    found = await _who(request, key.strip())
    if isinstance(found, Response):
        return found
    kind, prefix = found
    if kind != "api":
        return _error(400, "api_key_required", "The playground calls models: give an API key.")
    if session.kind == "management":  # the key must be one this management key manages
        status, body = await _call(request, "GET", "/v1/keys", session.key)
        prefixes = {k["prefix"] for k in body.get("data", [])} if status == 200 else set()
        if prefix not in prefixes:
            return _error(403, "other_account", "That key belongs to another account.")
    await _store(request).set_playground_key(_id_hash(session.sid), _seal(session.sid, key.strip()))
    return _json({"prefix": prefix})


async def _call(request: Request, method: str, target: str, key: str) -> tuple[int, Any]:
    """One call to this application's public API, in process, as any client would make it."""
    path, _, query = target.partition("?")
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": request.url.scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"authorization", f"Bearer {key}".encode()), (b"host", b"console")],
        "client": request.scope.get("client"),
        "server": request.scope.get("server"),
        "app": request.app,
        "state": request.scope.get("state", {}),
    }
    parts: list[bytes] = []
    status = 500

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await request.app.router(scope, receive, send)
    try:
        return status, json.loads(b"".join(parts) or b"{}")
    except ValueError:
        return status, {}


async def proxy(request: Request) -> Response:
    """``/ui/api/{path}`` → the public route ``/{path}`` with the session's key."""
    session = await session_of(request)
    path = "/" + request.path_params["path"]
    if session is None:
        return _error(401, "not_signed_in", "Sign in first.")
    if request.method not in SAFE_METHODS and not _csrf_ok(request, session):
        return _error(403, "csrf", "Missing or wrong CSRF token.")
    if not path.startswith(API_PREFIXES):
        return _error(404, "not_found", "The console forwards only to /v1/… and /v2/….")
    key = session.key
    if request.headers.get(PLAYGROUND_HEADER) == "playground" and session.playground_key:
        key = session.playground_key
    return Forwarded(path, key)


class Forwarded(Response):
    """The public route's own answer, written straight to this connection (a stream passes
    through as it is made); the body the browser sent is read by that route, not here."""

    def __init__(self, path: str, key: str) -> None:
        super().__init__()
        self.path = path
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dropped = {b"authorization", b"x-api-key", b"cookie", CSRF_HEADER.encode(), PLAYGROUND_HEADER.encode()}
        headers = [(name, value) for name, value in scope["headers"] if name not in dropped]
        headers.append((b"authorization", f"Bearer {self.key}".encode()))
        inner = {k: v for k, v in scope.items() if k not in ("route", "endpoint", "path_params", "router")}
        inner.update(path=self.path, raw_path=self.path.encode(), root_path="", headers=headers)

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"cache-control", b"no-store")]
            await send(message)

        # An error the route does not answer itself reaches the front door, as on the API's own path.
        await scope["app"].router(inner, receive, send_no_store)


def _op(method: str, path: str, endpoint: Endpoint, summary: str, security: tuple[str, ...] = ()) -> Operation:
    return Operation(method, path, endpoint, summary, "openai", security=security, tags=("console",))


# The console's routes, served and documented with the API's (``app.OPERATIONS``). The proxy is
# no API of its own: it answers exactly what the public route it forwards to answers.
SESSION = ("consoleSession",)
operations: list[Operation] = [
    _op("GET", "/ui", page, "The web console (docs/console.md)."),
    _op("GET", "/ui/static/{name}", static, "The console's scripts and styles."),
    _op("POST", "/ui/session", sign_in, "Sign in to the console: a key for a session cookie."),
    _op("GET", "/ui/session", who_am_i, "Who is signed in to the console, and its CSRF token.", SESSION),
    _op("DELETE", "/ui/session", sign_out, "Sign out of the console.", SESSION),
    _op(
        "POST",
        "/ui/session/playground-key",
        playground_key,
        "An API key for this console session's playground.",
        SESSION,
    ),
    *(
        _op(method, "/ui/api/{path:path}", proxy, "The public API, with the console session's key.", SESSION)
        for method in ("GET", "POST", "PATCH", "DELETE")
    ),
]
