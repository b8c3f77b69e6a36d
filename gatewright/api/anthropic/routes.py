"""Thin HTTP handlers: parse → to_core → gateway.start → render.

The key comes in ``x-api-key`` (what the Anthropic SDK sends) or ``Authorization: Bearer``;
``anthropic-version`` is accepted and not needed. Every answer carries Anthropic's ``request-id``
header (the same id as ``x-request-id``) and, where limits apply, ``anthropic-ratelimit-*`` headers
beside the gateway's ``x-ratelimit-*``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from gatewright.api.anthropic import schemas
from gatewright.api.anthropic.errors import error_body, lookup
from gatewright.api.anthropic.stream import MessageRenderer, render
from gatewright.api.anthropic.translate import count_request, from_core, to_core
from gatewright.api.deps import authenticate, gateway
from gatewright.api.http import JSONResponse, bearer, limit_headers, parse, request_id
from gatewright.api.openapi import Operation, routes_of
from gatewright.api.sse import EventStream
from gatewright.core.accumulate import collect
from gatewright.core.errors import GatewrightError
from gatewright.core.ids import now, random_hex
from gatewright.core.platform import LimitState
from gatewright.core.types import CoreResponse

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def api_key(request: Request) -> str | None:
    return request.headers.get("x-api-key") or bearer(request)


def anthropic_limit_headers(state: LimitState | None) -> dict[str, str]:
    """Anthropic's names for the same limits; resets are RFC 3339 instants, not durations."""
    if state is None:
        return {}
    headers: dict[str, str] = {}
    at = datetime.now(UTC)
    for kind, limit, remaining, reset in (
        ("requests", state.requests_limit, state.requests_remaining, state.requests_reset),
        ("tokens", state.tokens_limit, state.tokens_remaining, state.tokens_reset),
    ):
        if limit is not None:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = (at + timedelta(seconds=reset)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
    return headers


def _headers(rid: str, limits: LimitState | None) -> dict[str, str]:
    return {"request-id": rid, **limit_headers(limits), **anthropic_limit_headers(limits)}


def error_response(error: GatewrightError, rid: str) -> Response:
    headers = _headers(rid, getattr(error, "limits", None))
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["retry-after"] = str(max(1, round(retry_after)))
    _, status = lookup(error)
    return JSONResponse(error_body(error, rid), status_code=status, headers=headers)


render_error = error_response  # the front door's renderer for this dialect (``api.front.ErrorFormats``)


async def messages(request: Request) -> Response:
    rid = request_id(request)
    try:
        principal = await authenticate(request, api_key(request))
        wire = parse(schemas.MessagesRequest, await request.body())
        core_request = to_core(wire)
        call = await gateway(request).start(core_request, principal, rid, dialect="anthropic")
    except GatewrightError as error:
        return error_response(error, rid)
    headers = {**_headers(rid, call.limits), "x-gatewright-deployment": call.deployment, **call.notes}
    message_id = "msg_" + random_hex(12)
    if core_request.stream:
        renderer = MessageRenderer(message_id, call.entry.id, call.prompt_tokens)
        return EventStream(render(call.events, renderer, rid), headers={**SSE_HEADERS, **headers})
    try:
        acc = await collect(call.events)
    except GatewrightError as error:
        return error_response(error, rid)
    response = CoreResponse(
        id=message_id,
        model=call.entry.id,
        created=now(),
        choices=acc.choices,
        usage=acc.usage,
        cost=acc.cost,
        deployment=call.deployment,
    )
    return JSONResponse(from_core(response), headers=headers)


async def count_tokens(request: Request) -> Response:
    rid = request_id(request)
    try:
        principal = await authenticate(request, api_key(request), fresh=True)  # reserves nothing
        wire = parse(schemas.CountTokensRequest, await request.body())
        tokens = await gateway(request).count_tokens(count_request(wire), principal)
    except GatewrightError as error:
        return error_response(error, rid)
    return JSONResponse({"input_tokens": tokens}, headers={"request-id": rid})


_KEY = ("anthropicApiKey", "apiKey")
_EXAMPLE = {"model": "local", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hello"}]}

operations = [
    Operation(
        "POST",
        "/v1/messages",
        messages,
        "Create a message (Anthropic Messages).",
        "anthropic",
        body=schemas.MessagesRequest,
        security=_KEY,
        aliases=("/messages",),
        example=_EXAMPLE,
    ),
    Operation(
        "POST",
        "/v1/messages/count_tokens",
        count_tokens,
        "Count the tokens of a message's prompt.",
        "anthropic",
        body=schemas.CountTokensRequest,
        security=_KEY,
        aliases=("/messages/count_tokens",),
        example={k: v for k, v in _EXAMPLE.items() if k != "max_tokens"},
    ),
]
routes: list[BaseRoute] = routes_of(operations)
