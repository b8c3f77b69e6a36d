"""One request's way through the gateway, whatever dialect it came in.

    resolve model → check capabilities → count prompt → rate limit → reserve credits
    → route (retries, fallbacks; first event awaited) → stream events → price → settle once

Dialects call ``Gateway.start`` and render what it returns; they never see a backend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, fields, replace
from typing import cast

from gatewright.core import tracing
from gatewright.core.backend import CallContext
from gatewright.core.billing import price, prompt_token_bound, worst_case
from gatewright.core.catalog import Catalog, ModelEntry
from gatewright.core.embedding import EmbeddingCall, run_embedding
from gatewright.core.errors import (
    ContextWindowExceeded,
    GatewrightError,
    InsufficientCredits,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    UnsupportedFeature,
)
from gatewright.core.events import ChoiceEnd, Event, UsageReport
from gatewright.core.metrics import record_first_token, record_generation, record_refusal, record_usage
from gatewright.core.platform import Dialect, Hold, LimitState, Platform, Principal, SettleStatus
from gatewright.core.reasoning import split_reasoning
from gatewright.core.requestinfo import CURRENT as CURRENT_FACTS
from gatewright.core.routing import Router
from gatewright.core.settling import charge, settle
from gatewright.core.types import CoreRequest, Cost, EmbeddingRequest, ImagePart, Sampling, Usage

log = logging.getLogger("gatewright.pipeline")

CHAT_SCOPE = "model:chat"
RESPONSES_SCOPE = "model:responses"  # the Responses API's own scope (its stored responses too)

# Called with a finished answer's usage and price just before its charge is committed: a caller
# that must make something durable with the charge (a task's result) writes it here. If it raises,
# the hold closes unbilled and the request fails with that error.
BeforeCharge = Callable[[Usage, Cost], Awaitable[None]]


@dataclass(slots=True)
class Call:
    """A started generation: headers to send and the events to render."""

    request_id: str
    entry: ModelEntry
    deployment: str
    events: AsyncIterator[Event]
    limits: LimitState | None = None
    prompt_tokens: int = 0
    notes: dict[str, str] = field(default_factory=dict)

    async def aclose(self) -> None:
        await self.events.aclose()  # type: ignore[attr-defined]


def require_scope(principal: Principal | None, scope: str) -> None:
    """Each model endpoint checks its own scope (``model:chat``, ``model:responses``)."""
    if principal is not None and not principal.allows(scope):
        raise PermissionDenied(
            f"This API key lacks the scope `{scope}` needed to call this endpoint.",
            code="missing_scope",
        )


def require_model(principal: Principal | None, entry: ModelEntry) -> None:
    """A key with an allow-list of models calls only those (before any work or hold)."""
    if principal is not None and not principal.may_call(entry.id):
        raise PermissionDenied(
            f"This API key may not call the model `{entry.id}`; GET /v1/models with this key lists "
            "the models it may call.",
            param="model",
            code="model_not_allowed",
        )


def check_capabilities(entry: ModelEntry, request: CoreRequest) -> CoreRequest:
    """Refuse what the model cannot do, with the parameter to blame; drop soft hints it ignores."""
    if entry.type != "chat":
        raise InvalidRequest(
            f"The model `{entry.id}` is an {entry.type} model: it serves /v1/embeddings, not chat. "
            "GET /v1/models lists the chat models (type `chat`).",
            param="model",
            code="model_not_chat",
        )
    caps = entry.capabilities
    if not caps.vision:
        for i, message in enumerate(request.messages):
            if any(isinstance(p, ImagePart) for p in message.parts):
                raise UnsupportedFeature(
                    f"The model `{entry.id}` does not accept images (it has no vision); send text content only.",
                    param=f"messages[{i}].content",
                    code="image_input_not_supported",
                )
    if request.tools and not caps.tools:
        raise UnsupportedFeature(
            f"The model `{entry.id}` does not support tools.", param="tools", code="tools_not_supported"
        )
    if request.response_format.kind == "json_schema" and not caps.json_schema:
        raise UnsupportedFeature(
            f"The model `{entry.id}` does not support response_format json_schema.",
            param="response_format",
            code="json_schema_not_supported",
        )
    if request.logprobs and not caps.logprobs:
        raise UnsupportedFeature(
            f"The model `{entry.id}` does not return logprobs.", param="logprobs", code="logprobs_not_supported"
        )
    reasoning = request.reasoning
    if reasoning is not None and reasoning.effort != "none" and not caps.reasoning:
        if reasoning.required:
            raise UnsupportedFeature(
                f"The model `{entry.id}` does not reason; remove the thinking/reasoning setting "
                "or pick a reasoning model.",
                param="thinking",
                code="reasoning_not_supported",
            )
        # A hint (reasoning_effort, thinkingLevel) on a model that cannot reason is ignored;
        # the response says so in the x-gatewright-reasoning header.
        request = replace(request, reasoning=None)
    return request


def prepare(entry: ModelEntry, request: CoreRequest, prompt_tokens: int) -> CoreRequest:
    """The request as the backend gets it: canonical model id, the model's sampling defaults for
    knobs left unset, and an output budget that fits the context window (or an error saying why
    it cannot). Builds at most one new object: this runs on every request."""
    window = entry.context_window
    room = window - prompt_tokens
    if room <= 0:
        raise ContextWindowExceeded(
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
            param="messages",
            code="context_length_exceeded",
        )
    s = request.sampling
    asked = s.max_tokens
    if asked is not None and asked > room:
        raise ContextWindowExceeded(
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    budget = min(asked if asked is not None else entry.max_output, entry.max_output, room)
    d = entry.defaults
    sampling = Sampling(
        temperature=s.temperature if s.temperature is not None else d.temperature,
        top_p=s.top_p if s.top_p is not None else d.top_p,
        top_k=s.top_k if s.top_k is not None else d.top_k,
        frequency_penalty=s.frequency_penalty,
        presence_penalty=s.presence_penalty,
        seed=s.seed,
        max_tokens=budget,
        stop=s.stop,
    )
    return _copy_with(request, model=entry.id, sampling=sampling)


_REQUEST_FIELDS = tuple(f.name for f in fields(CoreRequest))


def _copy_with(request: CoreRequest, **changes: object) -> CoreRequest:
    """A copy with some fields swapped. Slot by slot: ``dataclasses.replace`` and ``copy.copy``
    both walk the field list through ``fields()`` on every call, and this runs on every request;
    the field names are read once, so the copy keeps whatever CoreRequest grows to carry."""
    new = object.__new__(CoreRequest)
    for name in _REQUEST_FIELDS:
        object.__setattr__(new, name, changes[name] if name in changes else getattr(request, name))
    return new


@dataclass
class Gateway:
    catalog: Catalog
    router: Router
    platform: Platform | None = None

    async def start(
        self,
        request: CoreRequest,
        principal: Principal | None,
        request_id: str,
        scope: str = CHAT_SCOPE,
        dialect: Dialect | None = None,
        before_charge: BeforeCharge | None = None,
        bill_abandoned: bool = True,
    ) -> Call:
        """Open a generation. ``dialect``: the API the request came through, for its usage record.
        ``before_charge``: see ``BeforeCharge``. ``bill_abandoned=False``: a generation the caller
        gives up is not billed (a task run stopped with its process: the task runs it again and
        bills that run), where a client that leaves pays what was made."""
        started = time.perf_counter()
        entry = self.catalog.resolve(request.model)
        require_scope(principal, scope)
        require_model(principal, entry)
        if tracing.ENABLED:
            tracing.annotate(_request_attributes(request, entry, principal))
        facts = CURRENT_FACTS.get()
        if facts is not None:
            facts.model = entry.id
            if principal is not None:
                facts.account_id, facts.key_prefix = principal.account_id, principal.prefix
        notes: dict[str, str] = {}
        checked = check_capabilities(entry, request)
        if checked.reasoning is None and request.reasoning is not None and request.reasoning.effort != "none":
            notes["x-gatewright-reasoning"] = "ignored: model does not reason"
        prompt_tokens = await self.router.count_prompt_tokens(entry, checked)
        request = prepare(entry, checked, prompt_tokens)

        limits: LimitState | None = None
        hold: Hold | None = None
        platform = self.platform if principal is not None else None
        if platform is not None and principal is not None:
            try:
                limits = await platform.limiter.acquire(principal, prompt_tokens)
            except RateLimited as refused:
                record_refusal(refused.status, refused.code)
                raise
            max_out = (request.sampling.max_tokens or entry.max_output) * request.n
            held_prompt = prompt_tokens
            if not self.router.counts_exactly(entry):  # an estimate: hold what it cannot exceed
                held_prompt = max(prompt_tokens, prompt_token_bound(checked))
            credits = max(worst_case(held_prompt, max_out, model.prices) for model in self.router.chain(entry, request))
            try:
                if tracing.ENABLED:
                    hold = await _traced_reserve(platform, principal, credits, request_id, entry.id)
                else:
                    hold = await platform.ledger.reserve(principal, credits, request_id, entry.id)
            except GatewrightError as error:
                if isinstance(error, InsufficientCredits):
                    record_refusal(error.status, error.code)
                raise _with_limits(error, limits) from None

        ctx = CallContext(
            request_id=request_id, owner=principal.prefix if principal else "", prompt_tokens=prompt_tokens
        )
        try:
            opened = await self.router.open(entry, request, ctx)
        except GatewrightError as error:
            if platform is not None and hold is not None:
                settle(platform, hold, Usage(), _ZERO, "error", entry.id, dialect, started)  # failures cost nothing
            raise _with_limits(error, limits) from None
        except BaseException:
            if platform is not None and hold is not None:
                # The caller left before the first token: bill what the backend did (its prompt).
                usage = ctx.usage if bill_abandoned else Usage()
                settle(platform, hold, usage, price(usage, entry.prices), "aborted", entry.id, dialect, started)
            raise
        # The first event is passed beside the rest (no generator layer per event to put it back in
        # front), unless something must see the stream whole or it is already the usage report.
        first, events = opened.first, opened.rest
        if opened.entry.reasoning_tags is not None or isinstance(first, UsageReport):
            first, events = None, opened.events
        if opened.entry.reasoning_tags is not None:
            events = split_reasoning(events, opened.entry.reasoning_tags, opened.entry.reasoning_starts_inside)
        if facts is not None:
            facts.model, facts.deployment = opened.entry.id, opened.deployment.name
        metered = _metered(
            first, events, ctx, opened.entry, platform, principal, hold, started, dialect, before_charge, bill_abandoned
        )
        # Run it to its first (empty) yield: from now on its settling `finally` runs however the
        # dialect ends the call, even if it never iterates (the event loop closes dropped generators).
        await anext(metered)
        return Call(
            request_id=request_id,
            entry=opened.entry,
            deployment=opened.deployment.name,
            events=cast(AsyncIterator[Event], metered),
            limits=limits,
            prompt_tokens=prompt_tokens,
            notes=notes,
        )

    async def embed(self, request: EmbeddingRequest, principal: Principal | None, request_id: str) -> EmbeddingCall:
        """Embeddings, through the same keys, limits and ledger (see ``core.embedding``)."""
        return await run_embedding(self.catalog, self.router, self.platform, request, principal, request_id)

    async def count_tokens(self, request: CoreRequest, principal: Principal | None = None) -> int:
        entry = self.catalog.resolve(request.model)
        require_model(principal, entry)
        # Counted as it would be sent: what the model cannot take is refused here too.
        return await self.router.count_tokens(entry, check_capabilities(entry, request))


_ZERO = Cost(credits=0, usd=0.0)
_background: set[asyncio.Future[None]] = set()  # keeps fire-and-forget tasks referenced


def _with_limits(error: GatewrightError, limits: LimitState | None) -> GatewrightError:
    """A request refused after the rate limiter counted it still reports the limit headers."""
    if limits is not None and getattr(error, "limits", None) is None:
        error.limits = limits  # type: ignore[attr-defined]
    return error


async def _traced_reserve(platform: Platform, principal: Principal, credits: int, request_id: str, model: str) -> Hold:
    with tracing.span("gatewright.reserve", {"gatewright.credits_held": credits}):
        return await platform.ledger.reserve(principal, credits, request_id, model)


def _request_attributes(request: CoreRequest, entry: ModelEntry, principal: Principal | None) -> tracing.Attributes:
    """The GenAI semantic-convention attributes of the request, and who asked."""
    attributes: dict[str, str | int | float | bool] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": request.model,
        "gen_ai.response.model": entry.id,
        "gatewright.stream": request.stream,
    }
    s = request.sampling
    for name, value in (
        ("gen_ai.request.max_tokens", s.max_tokens),
        ("gen_ai.request.temperature", s.temperature),
        ("gen_ai.request.top_p", s.top_p),
        ("gen_ai.request.seed", s.seed),
    ):
        if value is not None:
            attributes[name] = value
    if request.n != 1:
        attributes["gen_ai.request.choice.count"] = request.n
    if principal is not None:
        attributes["gatewright.key_prefix"] = principal.prefix
        attributes["gatewright.account_id"] = principal.account_id
    return attributes


def _note_usage(model: str, usage: Usage, cost: Cost) -> None:
    """Tokens and credits, for the request's span and its access line."""
    if tracing.ENABLED:
        tracing.annotate(_usage_attributes(model, usage, cost))
    facts = CURRENT_FACTS.get()
    if facts is not None:
        facts.input_tokens, facts.output_tokens, facts.credits = usage.input_tokens, usage.output_tokens, cost.credits


def _note_outcome(status: str) -> None:
    if tracing.ENABLED:
        tracing.annotate({"gatewright.outcome": status})
    facts = CURRENT_FACTS.get()
    if facts is not None:
        facts.outcome = status


def _usage_attributes(model: str, usage: Usage, cost: Cost) -> tracing.Attributes:
    return {
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gatewright.usage.cached_tokens": usage.cached_tokens,
        "gatewright.usage.reasoning_tokens": usage.reasoning_tokens,
        "gatewright.credits": cost.credits,
    }


def _count(model: str, usage: Usage, cost: Cost) -> None:
    u = usage
    record_usage(model, u.input_tokens, u.cached_tokens, u.output_tokens, u.reasoning_tokens, cost.credits)


async def _before(
    before_charge: BeforeCharge,
    platform: Platform,
    hold: Hold,
    usage: Usage,
    cost: Cost,
    model: str,
    dialect: Dialect | None,
    started: float,
    bill_abandoned: bool,
    principal: Principal | None,
) -> None:
    """The caller's hook before a charge; when it fails the hold closes unbilled. Cancelled (the
    client left while the hook wrote), the answer was made all the same: it is billed as any stream
    a client leaves, ``aborted`` with its usage, unless the caller does not bill abandoned work."""
    try:
        await before_charge(usage, cost)
    except asyncio.CancelledError:
        if bill_abandoned:
            settle(platform, hold, usage, cost, "aborted", model, dialect, started)
            _count(model, usage, cost)  # shown in /metrics, as any abandoned stream's billing is
            _note_usage(model, usage, cost)
            if principal is not None:  # and in the key's token limit
                _record_tokens_later(platform, principal, usage.output_tokens)
        else:
            settle(platform, hold, Usage(), _ZERO, "error", model, dialect, started)
        raise
    except BaseException:
        settle(platform, hold, Usage(), _ZERO, "error", model, dialect, started)
        raise


def _record_tokens_later(platform: Platform, principal: Principal, tokens: int) -> None:
    """Count a settled answer's tokens in its key's rate limit, off the path of a request that is
    being torn down (its task is cancelled, or it already answered)."""
    if tokens:
        task = asyncio.ensure_future(platform.limiter.record_tokens(principal, tokens))
        _background.add(task)
        task.add_done_callback(_background.discard)


_NOT_TOKENS = (ChoiceEnd, UsageReport)  # a tuple, built once: a `|` union is rebuilt per event


async def _metered(
    first: Event | None,
    events: AsyncIterator[Event],
    ctx: CallContext,
    entry: ModelEntry,
    platform: Platform | None,
    principal: Principal | None,
    hold: Hold | None,
    started: float,
    dialect: Dialect | None,
    before_charge: BeforeCharge | None = None,
    bill_abandoned: bool = True,
) -> AsyncGenerator[Event | None, None]:
    """Pass events through; price the usage report; settle the hold exactly once; time the
    first token and the tokens after it.

    ``first``: the event the router already received (never a usage report), or None; then
    ``events``. The first item is ``None``, consumed by ``Gateway.start`` (see there)."""
    settled = False
    status: SettleStatus = "aborted"
    first_token = 0.0

    async def charged(usage: Usage, cost: Cost) -> Cost:
        """The caller's hook before the charge (if any), then the charge; what was charged."""
        assert platform is not None and hold is not None
        if before_charge is not None:
            await _before(
                before_charge, platform, hold, usage, cost, entry.id, dialect, started, bill_abandoned, principal
            )
        return await charge(platform, hold, usage, cost, entry.id, dialect, started)

    try:
        yield None
        if first is not None:
            if not isinstance(first, _NOT_TOKENS) and not ctx.whole:
                first_token = time.perf_counter()
                record_first_token(entry.id, first_token - started)
            yield first
        async for event in events:
            if not first_token and not isinstance(event, _NOT_TOKENS) and not ctx.whole:
                first_token = time.perf_counter()
                record_first_token(entry.id, first_token - started)
            if isinstance(event, UsageReport):
                if first_token:
                    record_generation(entry.id, event.usage.output_tokens, time.perf_counter() - first_token)
                cost = price(event.usage, entry.prices)
                if platform is not None and hold is not None and principal is not None:
                    settled = True
                    cost = await charged(event.usage, cost)
                    await platform.limiter.record_tokens(principal, event.usage.output_tokens)
                event = UsageReport(event.usage, cost)
                _count(entry.id, event.usage, cost)
                _note_usage(entry.id, event.usage, cost)
            yield event
        status = "ok"
    except GatewrightError:
        status = "error"  # an upstream or engine failure mid-stream: never billed
        raise
    finally:
        _note_outcome(status)
        try:
            await events.aclose()  # type: ignore[attr-defined]
        finally:  # settle even if closing the backend was interrupted (a cancelled request)
            if not settled and platform is not None and hold is not None:
                # Abandoned by the client (bill what was generated) or failed (bill nothing); a
                # stream that ended without a usage report is billed from the meter, durably first.
                billed = status == "ok" or (status == "aborted" and bill_abandoned)
                usage = ctx.usage if billed else Usage()
                cost = price(usage, entry.prices) if usage.total_tokens else _ZERO
                if status == "ok":
                    cost = await charged(usage, cost)
                else:
                    settle(platform, hold, usage, cost, status, entry.id, dialect, started)
                _count(entry.id, usage, cost)  # what an abandoned stream is billed shows in /metrics too
                _note_usage(entry.id, usage, cost)
                if principal is not None:
                    _record_tokens_later(platform, principal, usage.output_tokens)
