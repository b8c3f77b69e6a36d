"""The one front door: every request, whatever its route, passes the same stack.

    FrontDoor          request id (``x-request-id``), the request's trace span (when tracing is on),
                       access line (text, or JSON lines with what the request turned out to be),
                       request metrics, and the answer to any error nothing else answered, in the
                       dialect the path belongs to
      → middleware     what ``create_app`` lists (CORS, body limits, tracing): outermost first
        → FastRouter   fixed paths by one dict lookup, the rest by Starlette's route matching
          → endpoint

A middleware added to the list in ``app.create_app`` (or with ``app.add_middleware`` before the app
starts) therefore applies to every route, and its requests are logged, counted and carry an id. It
may raise a ``GatewrightError`` (e.g. a 413 for a body too large): the front door renders it in the
caller's dialect, chosen by path prefix in one table (``ErrorFormats``), not by if-chains.

Starlette's own ``ServerErrorMiddleware`` and ``ExceptionMiddleware`` are not in the stack: the front
door is the one place that turns an exception into an answer (Starlette's would answer in plain
text), so ``exception_handlers`` are not used; add a row to the error table instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from gatewright.api.public import CURRENT_REQUEST
from gatewright.core import tracing
from gatewright.core.errors import GatewrightError, InternalError, InvalidRequest, NotFound
from gatewright.core.ids import request_id as new_request_id
from gatewright.core.metrics import record_request
from gatewright.core.requestinfo import CURRENT as CURRENT_FACTS
from gatewright.core.requestinfo import RequestFacts

log = logging.getLogger("gatewright.access")
errors_log = logging.getLogger("gatewright")

REQUEST_ID = "gatewright.request_id"  # the scope key endpoints read the id from (``api.http.request_id``)

# (error, request id) → the answer in one dialect's format, with the error's status.
ErrorRenderer = Callable[[GatewrightError, str], Response]


@dataclass(frozen=True)
class ErrorFormats:
    """Which dialect answers an error on a path: an ``exact`` path, else the longest ``prefixes`` key
    that matches in whole segments (``/v1/messages`` covers ``/v1/messages/count_tokens``, not
    ``/v1/messagesx``), else ``default``."""

    default: ErrorRenderer
    prefixes: Mapping[str, ErrorRenderer] = field(default_factory=dict)
    exact: Mapping[str, ErrorRenderer] = field(default_factory=dict)

    def for_path(self, path: str) -> ErrorRenderer:
        renderer = self.exact.get(path)
        while renderer is None and path:
            renderer = self.prefixes.get(path)
            path = path.rpartition("/")[0]
        return renderer or self.default


class AccessLog:
    """One line per request with its id, written in batches: a ``logging`` record per request,
    formatted and flushed one by one, cost ~7 % of the event loop's time under load. Lines gathered
    during one turn of the event loop are written together at its end, so none waits long."""

    def __init__(self, stream: TextIO | None = None, json: bool = False) -> None:
        self.stream = stream
        # JSON lines (GATEWRIGHT_LOG_FORMAT=json): one `logging` record per request, with the
        # request's facts as fields (see core.requestinfo and gatewright.logs), instead of batches.
        self.json = json
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""

    @property
    def enabled(self) -> bool:
        return log.isEnabledFor(logging.INFO)

    def _time(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # the date part changes once a second
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((now - second) * 1000):03d}"

    def record(
        self, method: str, path: str, status: int, elapsed: float, rid: str, facts: RequestFacts | None = None
    ) -> None:
        if not self.enabled:
            return
        if self.json:  # a logging record, so handlers and filters of `gatewright.access` see it
            fields = _access_fields(status, elapsed, rid, facts)
            log.info("%s %s %d", method, path, status, extra={"method": method, "path": path, **fields})
            return
        stamp = self._time(time.time())
        line = f"{stamp} INFO gatewright.access {method} {path} {status} {elapsed * 1000:.1f}ms request_id={rid}\n"
        if not self._lines:
            asyncio.get_running_loop().call_soon(self._flush)
        self._lines.append(line)

    def _flush(self) -> None:
        lines, self._lines = self._lines, []
        stream = self.stream or sys.stderr
        stream.write("".join(lines))
        stream.flush()


def _access_fields(status: int, elapsed: float, rid: str, facts: RequestFacts | None) -> dict[str, Any]:
    """The access record's fields beyond its message: what the JSON formatter writes out."""
    fields: dict[str, Any] = {"request_id": rid, "status": status, "latency_ms": round(elapsed * 1000, 1)}
    if facts is not None and facts.model is not None:
        fields.update(
            account_id=facts.account_id,
            key_prefix=facts.key_prefix,
            model=facts.model,
            deployment=facts.deployment,
            input_tokens=facts.input_tokens,
            output_tokens=facts.output_tokens,
            credits=facts.credits,
            outcome=facts.outcome,
        )
    return fields


def as_gatewright_error(error: Exception, scope: Scope) -> GatewrightError:
    """What the caller is told about an exception nothing answered (a bug is logged, not described)."""
    if isinstance(error, GatewrightError):
        return error
    if isinstance(error, HTTPException):  # the router's 404 and 405
        where = f"{scope['method']} {scope['path']}"
        if error.status_code == 404:
            return NotFound(f"Invalid URL ({where}).", code="unknown_url")
        if error.status_code == 405:
            allowed = (error.headers or {}).get("Allow", "")
            return InvalidRequest(f"Method not allowed ({where}); allowed: {allowed}.", code="method_not_allowed")
        return InvalidRequest(error.detail, status=error.status_code)
    return InternalError("Internal server error.")


class FrontDoor:
    """The outermost layer: every HTTP request gets an id, an access line and metrics, and an error
    that reaches it is answered in the route's dialect (an Anthropic route in Anthropic's format)."""

    def __init__(self, app: ASGIApp, errors: ErrorFormats, access: AccessLog) -> None:
        self.app = app
        self.errors = errors
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope[REQUEST_ID] = new_request_id()
        CURRENT_REQUEST.set(rid)  # for error messages that give it (``api.public``)
        started = time.perf_counter()
        status = 0
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        facts = None
        if self.access.json:  # only then is anything gathered for the access line
            facts = RequestFacts()
            facts_token = CURRENT_FACTS.set(facts)
        span = span_token = None
        if tracing.ENABLED:
            span, span_token = _start_span(scope, rid)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            error = as_gatewright_error(exc, scope)
            if isinstance(error, InternalError):
                errors_log.exception("unhandled error, request_id=%s", rid)
            if status:  # the answer had begun (a stream): the connection is ended, nothing more to say
                return
            response = self.errors.for_path(scope["path"])(error, rid)
            if isinstance(exc, HTTPException):  # the protocol's own status (405 stays 405) and headers
                response.status_code = exc.status_code
                response.init_headers({**dict(response.headers), **(exc.headers or {})})
            await response(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            elapsed = time.perf_counter() - started
            self.access.record(scope["method"], scope["path"], status, elapsed, rid, facts)
            record_request(route.path if isinstance(route, Route) else "other", status, elapsed)
            if span is not None:
                tracing.end_request(span, span_token, status)
            if facts is not None:
                CURRENT_FACTS.reset(facts_token)


# Which dialect a path speaks (an attribute of the request's span).
DIALECTS = {
    "/v1/chat/completions": "openai",
    "/chat/completions": "openai",
    "/v1/embeddings": "openai",
    "/embeddings": "openai",
    "/v1/messages": "anthropic",
    "/messages": "anthropic",
    "/v1/messages/count_tokens": "anthropic",
    "/messages/count_tokens": "anthropic",
    "/v1/responses": "openai-responses",
    "/responses": "openai-responses",
    "/v1": "task-api",
    "/v1/tasks": "task-api",
}


def _start_span(scope: Scope, rid: str) -> tuple[Any, object]:
    """The request's span, continuing the caller's ``traceparent`` when it sends one."""
    path = scope["path"]
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    attributes = {
        "http.request.method": scope["method"],
        "url.path": path,
        "gatewright.request_id": rid,
        "gatewright.dialect": DIALECTS.get(path, "other"),
    }
    return tracing.start_request(f"{scope['method']} {path}", headers, attributes)


Endpoint = Callable[[Request], Awaitable[Response]]


def _plain(route: Route) -> Endpoint | None:
    """The endpoint of a route that Starlette only wraps in ``request_response`` (an async function,
    no route middleware). Called directly, it skips that wrapper's exception-handler layer, which
    passes everything through here (no ``ExceptionMiddleware``): measured, about a tenth of the
    application's own CPU per request (``bench/inprocess.py``)."""
    plain = inspect.iscoroutinefunction(route.endpoint) and getattr(route.app, "__module__", "") == "starlette.routing"
    return route.endpoint if plain else None


class FastRouter(Router):
    """Starlette's router with a dict in front: a fixed path (no ``{param}``) is found by one lookup on
    (method, path) instead of a regular expression per route in turn, and its endpoint is called
    directly; the rest, 404 and 405 included, go through Starlette's matching unchanged."""

    def __init__(self, routes: Sequence[BaseRoute], lifespan: Lifespan[Any] | None = None) -> None:
        super().__init__(list(routes), lifespan=lifespan)
        self.fixed: dict[tuple[str, str], tuple[Route, Endpoint | None]] = {}
        for route in routes:
            if isinstance(route, Route) and "{" not in route.path:
                for method in route.methods or ():
                    self.fixed.setdefault((method, route.path), (route, _plain(route)))

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):  # mounted under a prefix: Starlette's way
            found = self.fixed.get((scope["method"], scope["path"]))
            if found is not None:
                route, endpoint = found
                scope["router"] = self
                scope["endpoint"] = route.endpoint
                scope["route"] = route
                scope["path_params"] = {}
                if endpoint is None:
                    await route.app(scope, receive, send)
                    return
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().app(scope, receive, send)


class GatewayApp(Starlette):
    """Starlette, with the front door as its outermost layer and the fast router as its innermost."""

    def __init__(
        self,
        *,
        routes: Sequence[BaseRoute],
        errors: ErrorFormats,
        middleware: Sequence[Middleware] = (),
        lifespan: Lifespan[Any] | None = None,
        max_body_size: int | None = None,
    ) -> None:
        super().__init__(middleware=list(middleware), lifespan=lifespan, max_body_size=max_body_size)
        self.router = FastRouter(routes, lifespan=lifespan)
        self.errors = errors
        self.access = AccessLog()

    def build_middleware_stack(self) -> ASGIApp:
        middleware = list(self.user_middleware)
        if self.max_body_size is not None:  # Starlette's limit raises a 413 the front door renders
            middleware.insert(0, Middleware(RequestBodyLimitMiddleware, max_body_size=self.max_body_size))
        app: ASGIApp = self.router.middleware_stack  # the router's own entry, one call shorter than the router
        for cls, args, kwargs in reversed(middleware):
            app = cls(app, *args, **kwargs)
        return FrontDoor(app, self.errors, self.access)
