"""Thin HTTP handlers: parse → to_core → gateway.start → render."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gatewright.api.deps import authenticate, gateway
from gatewright.api.http import JSONResponse, bearer, limit_headers, parse, request_id
from gatewright.api.openai import schemas
from gatewright.api.openai.embeddings import EmbeddingsRequest, embeddings
from gatewright.api.openai.errors import error_body
from gatewright.api.openai.stream import ChunkRenderer, render
from gatewright.api.openai.translate import from_core, to_core
from gatewright.api.openapi import Operation, routes_of
from gatewright.api.sse import EventStream
from gatewright.core.accumulate import collect
from gatewright.core.catalog import ModelEntry
from gatewright.core.errors import GatewrightError, InvalidRequest, Unauthorized
from gatewright.core.events import Event, ReasoningDelta, ReasoningSignature, RedactedReasoning
from gatewright.core.ids import now, random_hex
from gatewright.core.routing import Router
from gatewright.core.types import CoreResponse

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
REASONING_EVENTS = (ReasoningDelta, ReasoningSignature, RedactedReasoning)


async def without_reasoning(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """``reasoning.exclude``: the answer without its reasoning (which usage still reports)."""
    try:
        async for event in events:
            if not isinstance(event, REASONING_EVENTS):
                yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]


# Model types as the reference's GET /models names them (003 L34488-34621).
REFERENCE_TYPES = {"chat": "chat-completion", "embedding": "embedding"}

# The endpoints a model of each type serves, as /v1/models reports them.
ENDPOINTS: dict[str, list[str]] = {
    "chat": ["/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/tasks"],
    "embedding": ["/v1/embeddings"],
}


def error_response(error: GatewrightError, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    retry_after = getattr(error, "retry_after", None)  # ours (RateLimited) or an upstream's 429
    if retry_after is not None:
        headers["retry-after"] = str(max(1, round(retry_after)))
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


def render_error(error: GatewrightError, request_id: str) -> Response:
    """This dialect's answer to an error the front door caught (``api.front.ErrorFormats``)."""
    return error_response(error)


async def chat_completions(request: Request) -> Response:
    rid = request_id(request)
    try:
        principal = await authenticate(request, bearer(request))
        wire = parse(schemas.ChatCompletionRequest, await request.body())
        core_request = to_core(wire)
        call = await gateway(request).start(core_request, principal, rid, dialect="openai")
    except GatewrightError as error:
        return error_response(error, limit_headers(getattr(error, "limits", None)))
    headers = {**limit_headers(call.limits), "x-gatewright-deployment": call.deployment, **call.notes}
    completion_id = "chatcmpl-" + random_hex(12)
    created = now()
    events = call.events
    if wire.reasoning is not None and wire.reasoning.exclude:
        events = without_reasoning(events)  # still generated, billed and counted in usage
    if core_request.stream:
        include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
        renderer = ChunkRenderer(completion_id, created, call.entry.id, include_usage, rid)
        return EventStream(render(events, renderer), headers={**SSE_HEADERS, **headers})
    try:
        acc = await collect(events, core_request.n)
    except GatewrightError as error:
        return error_response(error, headers)
    response = CoreResponse(
        id=completion_id,
        model=call.entry.id,
        created=created,
        choices=acc.choices,
        usage=acc.usage,
        cost=acc.cost,
        deployment=call.deployment,
        request_id=rid,
    )
    if acc.usage.estimated:
        headers["x-gatewright-usage"] = "estimated"
    return JSONResponse(from_core(response), headers=headers)


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: OpenAI's list shape, with gatewright's extra facts on each model. Public;
    with a key that has an allow-list of models, only the models it may call. ``?deployments=true``
    adds each model's deployments and whether each is up (see ``_deployments``): with the platform
    on, only for a credential of the gateway (the health of each upstream is no stranger's business)."""
    gw = gateway(request)
    catalog, platform, token = gw.catalog, gw.platform, bearer(request)
    with_deployments = bool(request.scope["query_string"]) and _flag(request, "deployments")
    principal = None
    if platform is not None and token:
        try:
            principal = await authenticate(request, token, fresh=True)
        except GatewrightError:
            principal = None  # the list is public: a key that does not authenticate filters nothing
    if (
        with_deployments
        and platform is not None
        and principal is None
        and not await platform.authenticator.is_credential(token)
    ):
        raise Unauthorized(
            "'deployments=true' needs a key of this gateway: send an API or management key (or the "
            "operator's) as 'Authorization: Bearer …'.",
            code="invalid_api_key" if token else "missing_api_key",
        )
    entries = [entry for entry in catalog if principal is None or principal.may_call(entry.id)]
    data = [_listed(entry) for entry in entries]
    if with_deployments:
        router, now = gw.router, time.monotonic()
        data = [
            {**model, "deployments": _deployments(entry, router, now)}
            for entry, model in zip(entries, data, strict=True)
        ]
    return JSONResponse({"object": "list", "data": data})


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false")
    if value not in ("true", "false"):
        raise InvalidRequest(f"Invalid '{name}': must be true or false.", param=name)
    return value == "true"


def _deployments(entry: ModelEntry, router: Router, now: float) -> list[dict[str, Any]]:
    """Where the model runs and whether each place is up, as this process's router sees it: its
    name (the ``x-gatewright-deployment`` header every answer carries) and engine kind, never an
    upstream's address or credential. ``state``: ``up``; ``probing`` (its circuit breaker's
    cooldown is over: the next request tries it again); ``down`` (the breaker is open after
    failures in a row); ``inactive`` (its credential's variable is not set)."""
    out = []
    for deployment in entry.deployments:
        breaker = router.breaker(deployment)
        if not deployment.active:
            state = "inactive"
        elif not breaker.available(now):
            state = "down"
        else:
            state = "probing" if breaker.tripped else "up"
        out.append(
            {"name": deployment.name, "backend": deployment.backend, "state": state, "up": state in ("up", "probing")}
        )
    return out


# Each entry's listing, made once: an entry is frozen, and a reloaded catalog brings new entries
# (keyed by identity, the entry kept beside it so a reused id never finds another's listing).
_LISTED: dict[int, tuple[ModelEntry, dict[str, Any]]] = {}


def _listed(entry: ModelEntry) -> dict[str, Any]:
    """The entry's listing, shared between requests: never changed in place."""
    cached = _LISTED.get(id(entry))
    if cached is not None and cached[0] is entry:
        return cached[1]
    if len(_LISTED) > 4096:  # catalogs reloaded many times over: start again
        _LISTED.clear()
    model = _model(entry)
    _LISTED[id(entry)] = (entry, model)
    return model


def _model(entry: ModelEntry) -> dict[str, Any]:
    embedding = entry.embedding
    return {
        "id": entry.id,
        "object": "model",
        "created": 0,
        "owned_by": entry.developer or "gatewright",
        "type": entry.type,
        "active": entry.active,
        "aliases": list(entry.aliases),
        "context_window": entry.context_window,
        "max_output_tokens": entry.max_output if embedding is None else None,
        "capabilities": entry.capabilities.model_dump(),
        "pricing": {
            "input_usd_per_million": entry.prices.input,
            "cached_input_usd_per_million": entry.prices.cached,
            "cache_write_usd_per_million": entry.prices.cache_write,
            "output_usd_per_million": entry.prices.output,
        },
        "features": _features(entry) if embedding is None else ["openai/embeddings"],
        "endpoints": ENDPOINTS[entry.type],
        **({"embedding": embedding.model_dump()} if embedding is not None else {}),
    }


async def list_models_reference(request: Request) -> Response:
    """``GET /models`` (no key): the reference platform's own shape, a bare array of models
    with ``type`` and ``info`` (003 L34934-34969). Only active models are listed there: a
    caller of this endpoint can use every model it names."""
    catalog = gateway(request).catalog
    data = []
    for entry in catalog:
        if not entry.active:
            continue
        chat = entry.embedding is None
        info: dict[str, object] = {
            "name": entry.name or entry.id,
            "developer": entry.developer or "gatewright",
            "description": entry.description or "",
            "contextLength": entry.context_window,
        }
        if chat:
            info["maxTokens"] = entry.max_output
        data.append(
            {
                "id": entry.id,
                "type": REFERENCE_TYPES[entry.type],
                "info": info,
                "features": _features(entry) if chat else [],
                "endpoints": ENDPOINTS[entry.type],
            }
        )
    return JSONResponse(data)


def _features(entry: object) -> list[str]:
    # The reference's feature strings (003 L34500-34516), derived from capabilities.
    caps = entry.capabilities  # type: ignore[attr-defined]
    base = "openai/chat-completion"
    features = [
        base,
        f"{base}.stream",
        f"{base}.message.system",
        f"{base}.message.developer",
        f"{base}.message.assistant",
        f"{base}.max-completion-tokens",
        f"{base}.stop",
        f"{base}.seed",
    ]
    if caps.tools:
        features.append(f"{base}.function")
    if caps.reasoning:
        features.append(f"{base}.reasoning")
    if caps.json_schema:
        features.append(f"{base}.response-format")
    return features


operations = [
    Operation(
        "POST",
        "/v1/chat/completions",
        chat_completions,
        "Create a chat completion (OpenAI Chat Completions).",
        "openai",
        body=schemas.ChatCompletionRequest,
        aliases=("/chat/completions",),
        example={"model": "local", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16},
    ),
    Operation("GET", "/v1/models", list_models, "List the models (OpenAI's list shape).", "openai", security=()),
    Operation(
        "GET",
        "/models",
        list_models_reference,
        "List the active models in the reference platform's shape (an array with type and info).",
        "openai",
        security=(),
    ),
    Operation(
        "POST",
        "/v1/embeddings",
        embeddings,
        "Create embeddings (OpenAI Embeddings).",
        "openai",
        body=EmbeddingsRequest,
        aliases=("/embeddings",),
        example={"model": "local-embedding", "input": "Say hello"},
    ),
]
routes = routes_of(operations)
