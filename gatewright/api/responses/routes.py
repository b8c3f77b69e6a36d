"""Thin HTTP handlers of the Responses API: parse → (stored prefix) → to_core → gateway.start →
fold the events into a Response (streamed as typed events, or whole) → store it when asked."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gatewright.api.deps import authenticate, gateway
from gatewright.api.http import JSONResponse, bearer, limit_headers, request_id
from gatewright.api.openapi import Operation, routes_of
from gatewright.api.public import internal
from gatewright.api.responses import history
from gatewright.api.responses import schemas as w
from gatewright.api.responses.errors import error_body
from gatewright.api.responses.stream import ResponseBuilder
from gatewright.api.responses.translate import (
    input_items,
    resource,
    text_echo,
    to_core,
    tool_choice_echo,
    tools_echo,
)
from gatewright.api.sse import EventStream
from gatewright.core.catalog import ModelEntry
from gatewright.core.errors import GatewrightError, InvalidRequest, UnsupportedFeature
from gatewright.core.ids import now, random_hex
from gatewright.core.pipeline import RESPONSES_SCOPE, Call, require_scope
from gatewright.core.platform import Principal
from gatewright.core.stored import ResponseStore

log = logging.getLogger("gatewright.responses")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
NO_ACCOUNT = 0  # a bare proxy's responses: one owner, the process

Persist = Callable[[dict[str, Any]], Awaitable[None]]


def error_response(error: GatewrightError, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["retry-after"] = str(max(1, round(retry_after)))
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


def render_error(error: GatewrightError, request_id: str) -> Response:
    """This dialect's answer to an error the front door caught (``api.front.ErrorFormats``)."""
    return error_response(error)


def _store(request: Request) -> ResponseStore:
    store: ResponseStore = request.app.state.response_store
    return store


def _retention(request: Request) -> timedelta:
    return timedelta(days=request.app.state.settings.responses_retention_days)


async def _caller(request: Request, fresh: bool = True) -> tuple[Principal | None, int]:
    """``fresh`` (a store read) except for creating a response, whose credit reservation refuses a
    disabled key itself (``api.deps.authenticate``)."""
    principal = await authenticate(request, bearer(request), fresh)
    require_scope(principal, RESPONSES_SCOPE)
    return principal, principal.account_id if principal is not None else NO_ACCOUNT


def _first(*values: float | None) -> float | None:
    """The setting as used: the request's, else the model's default, else OpenAI's."""
    return next((v for v in values if v is not None), None)


def _base(response_id: str, req: w.CreateResponse, entry: ModelEntry, store: bool) -> dict[str, Any]:
    """The Response object's fields that come from the request (and the model's defaults)."""
    d = entry.defaults
    reasoning = req.reasoning
    base: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": now(),
        "status": "in_progress",
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "model": entry.id,
        "output": [],
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": req.previous_response_id,
        "reasoning": {
            "effort": reasoning.effort if reasoning else None,
            "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
        },
        "store": store,
        "temperature": _first(req.temperature, d.temperature, 1.0),
        "text": text_echo(req),
        "tool_choice": tool_choice_echo(req),
        "tools": tools_echo(req),
        "top_logprobs": req.top_logprobs or 0,
        "top_p": _first(req.top_p, d.top_p, 1.0),
        "truncation": "disabled",
        "metadata": req.metadata or {},
        "background": False,
        "service_tier": "default",
        "safety_identifier": req.safety_identifier,
        "prompt_cache_key": req.prompt_cache_key,
    }
    if req.user is not None:  # a string when present (the spec has no null for it)
        base["user"] = req.user
    return base


async def create_response(request: Request) -> Response:
    try:
        principal, account = await _caller(request, fresh=False)
        wire = w.parse_request(await request.body())
        store = _store(request)
        prefix = await history.previous(store, account, wire.previous_response_id) if wire.previous_response_id else []
        own = input_items(wire)
        core_request = to_core(wire, [*history.as_items(prefix), *own])
        call = await gateway(request).start(
            core_request, principal, request_id(request), scope=RESPONSES_SCOPE, dialect="openai-responses"
        )
    except GatewrightError as error:
        return error_response(error, limit_headers(getattr(error, "limits", None)))
    headers = {**limit_headers(call.limits), "x-gatewright-deployment": call.deployment, **call.notes}
    keep = wire.store is not False
    base = _base("resp_" + random_hex(24), wire, call.entry, keep)
    persist: Persist | None = None
    if keep:
        items = [*prefix, *(resource(item) for item in own)]
        retention = _retention(request)

        async def keep_it(response: dict[str, Any]) -> None:
            try:
                await history.save(store, account, response, items, retention)
            except Exception:  # the answer was generated and billed: it is still sent
                log.exception("storing response %s failed", response["id"])

        persist = keep_it

    if wire.stream:
        frames = _frames(call, ResponseBuilder(base, emit=True), persist)
        return EventStream(frames, headers={**SSE_HEADERS, **headers})
    builder = ResponseBuilder(base, emit=False)
    try:
        async for event in call.events:
            builder.add(event)
    except GatewrightError as error:
        return error_response(error, headers)
    finally:
        await call.aclose()
    _, response = builder.finish()
    if persist is not None:
        await persist(response)
    if builder.usage is not None and builder.usage.estimated:
        headers["x-gatewright-usage"] = "estimated"
    return JSONResponse(response, headers=headers)


async def _frames(call: Call, builder: ResponseBuilder, persist: Persist | None) -> AsyncIterator[bytes]:
    try:
        for frame in builder.start():
            yield frame
        async for event in call.events:
            for frame in builder.add(event):
                yield frame
    except Exception as raised:  # a bug is told in the stream too, not as a dropped connection
        error = raised if isinstance(raised, GatewrightError) else internal(raised)
        for frame in builder.failed(error):
            yield frame
        return
    finally:
        await call.aclose()
    frames, response = builder.finish()
    for frame in frames[:-1]:  # items closing
        yield frame
    if persist is not None:  # stored before the client hears it is complete, so it can continue at once
        await persist(response)
    yield frames[-1]


# -- stored responses ---------------------------------------------------------------------


def _query(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    params = request.query_params
    for name in params:
        if name not in allowed:
            raise InvalidRequest(f"Unrecognized query parameter: '{name}'.", param=name)
    return {name: params[name] for name in params}


GET_PARAMS = frozenset({"include", "include[]", "stream", "starting_after", "include_obfuscation"})
LIST_PARAMS = frozenset({"limit", "order", "after", "include", "include[]"})


async def get_response(request: Request) -> Response:
    try:
        _, account = await _caller(request)
        query = _query(request, GET_PARAMS)
        if query.get("stream", "false").lower() == "true":
            raise UnsupportedFeature(
                "Streaming a stored response again is not supported by gatewright (it has no background "
                "responses); fetch it without 'stream'.",
                param="stream",
                code="unsupported_parameter",
            )
        stored = await history.find(_store(request), account, request.path_params["response_id"])
    except GatewrightError as error:
        return error_response(error)
    return JSONResponse(stored.response)


async def delete_response(request: Request) -> Response:
    response_id = request.path_params["response_id"]
    try:
        _, account = await _caller(request)
        _query(request, frozenset())
        if not await _store(request).delete(account, response_id):
            raise history.not_found(response_id)
    except GatewrightError as error:
        return error_response(error)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


def _limit(value: str | None) -> int:
    if value is None:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise InvalidRequest(
            f"Invalid 'limit': an integer from 1 to 100 is expected, got '{value}'.",
            param="limit",
            code="invalid_value",
        )
    return int(value)


async def list_input_items(request: Request) -> Response:
    try:
        _, account = await _caller(request)
        query = _query(request, LIST_PARAMS)
        limit = _limit(query.get("limit"))
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest(
                f"Invalid 'order': 'asc' or 'desc' is expected, got '{order}'.", param="order", code="invalid_value"
            )
        stored = await history.find(_store(request), account, request.path_params["response_id"])
        items = stored.items if order == "asc" else stored.items[::-1]
        after = query.get("after")
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise InvalidRequest(f"Invalid 'after': no input item has the id '{after}'.", param="after")
            items = items[ids.index(after) + 1 :]
    except GatewrightError as error:
        return error_response(error)
    page = items[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }
    )


operations = [
    Operation(
        "POST",
        "/v1/responses",
        create_response,
        "Create a model response (OpenAI Responses).",
        "openai",
        body=w.CreateResponse,
        aliases=("/responses",),
        example={"model": "local", "input": "Say hello", "max_output_tokens": 16},
        tags=("responses",),
    ),
    Operation("GET", "/v1/responses/{response_id}", get_response, "A stored response.", "openai", tags=("responses",)),
    Operation(
        "DELETE",
        "/v1/responses/{response_id}",
        delete_response,
        "Delete a stored response.",
        "openai",
        tags=("responses",),
    ),
    Operation(
        "GET",
        "/v1/responses/{response_id}/input_items",
        list_input_items,
        "The input items of a stored response.",
        "openai",
        tags=("responses",),
    ),
]
routes = routes_of(operations)
