"""The ASGI entry point: request ids, the access log, and a direct path for the hot routes.

Model calls are most of the traffic and every microsecond of the gateway's own overhead shows in
the benchmark, so the hot routes skip Starlette's middleware stack and route table (one dict
lookup on method and path instead of several wrapped ``send`` calls and a regex per route).
Everything else, lifespan included, goes through Starlette unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatewright.api.http import JSONResponse
from gatewright.core import tracing
from gatewright.core.ids import request_id as new_request_id
from gatewright.core.metrics import record_request

log = logging.getLogger("gatewright.access")
errors_log = logging.getLogger("gatewright")

Endpoint = Callable[[Request], Awaitable[Response]]
REQUEST_ID = "gatewright.request_id"


class AccessLog:
    """One line per request with its id, written in batches: a ``logging`` record per request,
    formatted and flushed one by one, cost ~7 % of the event loop's time under load. Lines gathered
    during one turn of the event loop are written together at its end, so none waits long."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
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

    def record(self, method: str, path: str, status: int, elapsed: float, rid: str) -> None:
        if not self.enabled:
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


class RequestIdMiddleware:
    """For the routes that go through Starlette: an id (``x-request-id``) and an access line."""

    def __init__(self, app: ASGIApp, access: AccessLog) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope[REQUEST_ID] = new_request_id()
        started = time.perf_counter()
        status = 0
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        span = token = None
        if tracing.ENABLED:
            span, token = _start_span(scope, rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            _answered(self.access, scope, route, status, started, rid)
            if span is not None:
                tracing.end_request(span, token, status)


class GatewayApp(Starlette):
    """Starlette, with a dispatch table in front for the routes model calls use."""

    def __init__(self, *, hot: dict[tuple[str, str], Endpoint], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot = hot
        self.access = AccessLog()
        self.add_middleware(RequestIdMiddleware, access=self.access)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.hot.get((scope["method"], scope["path"]))
            if endpoint is not None:
                await self._serve(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        scope["app"] = self
        rid = scope[REQUEST_ID] = new_request_id()
        if tracing.ENABLED:
            await self._traced(endpoint, scope, receive, send, started, rid)
            return
        await self._answer(endpoint, scope, receive, send, started, rid)

    async def _traced(
        self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send, started: float, rid: str
    ) -> None:
        span, token = _start_span(scope, rid)
        status = 500
        try:
            status = await self._answer(endpoint, scope, receive, send, started, rid)
        finally:
            tracing.end_request(span, token, status)

    async def _answer(
        self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send, started: float, rid: str
    ) -> int:
        try:
            response = await endpoint(Request(scope, receive))
        except Exception:  # a bug, not bad input: those are answered by the endpoint itself
            errors_log.exception("unhandled error, request_id=%s", rid)
            response = JSONResponse(
                {"error": {"message": "Internal server error.", "type": "server_error", "param": None, "code": None}},
                status_code=500,
            )
        response.raw_headers.append((b"x-request-id", rid.encode()))
        try:
            await response(scope, receive, send)
        finally:
            _answered(self.access, scope, scope["path"], response.status_code, started, rid)
        return response.status_code


# Which dialect a model-call route speaks (a span attribute).
DIALECTS = {
    "/v1/chat/completions": "openai",
    "/chat/completions": "openai",
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
    """The request's span (continuing the caller's ``traceparent`` when it sends one)."""
    path = scope["path"]
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    attributes = {
        "http.request.method": scope["method"],
        "url.path": path,
        "gatewright.request_id": rid,
        "gatewright.dialect": DIALECTS.get(path, "other"),
    }
    return tracing.start_request(f"{scope['method']} {path}", headers, attributes)


def _answered(access: AccessLog, scope: Scope, route: str, status: int, started: float, rid: str) -> None:
    """The access line and the request metrics, once a request is answered (or given up on)."""
    elapsed = time.perf_counter() - started
    access.record(scope["method"], scope["path"], status, elapsed, rid)
    record_request(route, status, elapsed)
