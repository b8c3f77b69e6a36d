"""Middleware of the front door's list (``app.create_app``) that bound what a caller can make the
gateway do before anything else runs: the size of a request body, and which web origins may call.

``BodyLimit`` refuses a body over the limit with a 413 in the route's dialect: at once when the
declared ``content-length`` is over it (nothing is read, nothing authenticated), else as soon as
the bytes received pass it (a chunked body is never read further). CORS is off unless origins are
configured, and then applies to every route, as every middleware of the list does.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatewright.api.front import REQUEST_ID
from gatewright.core.errors import PayloadTooLarge

# Headers a browser client may read from an answer (ids and rate limits).
EXPOSED = [
    "x-request-id",
    "request-id",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-gatewright-deployment",
]


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than this gateway accepts ({limit} bytes).", code="request_too_large"
    )


def _declared(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared(scope)
        if declared is not None and declared > self.limit:
            # Answered here (not raised) so that the middleware outside, CORS, still sees the answer.
            app: Any = scope["app"]
            response = app.errors.for_path(scope["path"])(_too_large(self.limit), scope.get(REQUEST_ID, ""))
            response.headers["connection"] = "close"  # the unread body is not drained
            await response(scope, receive, send)
            return
        if declared is not None:
            # The HTTP server delivers no more than the declared length (h11 and httptools frame the
            # body by it), so only a body without one (chunked) needs counting.
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _too_large(self.limit)
            return message

        await self.app(scope, limited, send)


def exposure_middleware(cors_origins: str, max_body_bytes: int) -> list[Middleware]:
    """The body limit always; CORS only when origins are configured (off by default)."""
    middleware: list[Middleware] = []
    origins = [origin.strip() for origin in cors_origins.split(",") if origin.strip()]
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=EXPOSED,
                max_age=600,
            )
        )
    middleware.append(Middleware(BodyLimit, limit=max_body_bytes))
    return middleware
