"""An Anthropic Messages API as an upstream (Anthropic itself, or any server speaking Messages).

The same neutral requests as every backend, sent as Messages: system prompts go to ``system``, tool
calls and results become ``tool_use`` / ``tool_result`` blocks, reasoning settings become
``thinking``, stops become ``stop_sequences``. Answers come back as neutral events: ``thinking``
blocks as reasoning, ``tool_use`` blocks (whole, or streamed as ``input_json_delta``) as tool calls.
Usage converts Anthropic's counting, whose ``input_tokens`` excludes cache reads and writes, to the
whole prompt (conformance.md §3).

Deployment options: ``anthropic_version`` (header, default ``2023-06-01``), ``auth``
(``x-api-key``, the default, or ``bearer``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gatewright.backends.images import anthropic_image_tokens
from gatewright.backends.options import AnthropicOptions
from gatewright.backends.registry import BackendEnv
from gatewright.backends.upstream import (
    CALLER_STATUSES,
    HttpUpstream,
    Streaming,
    client_for,
    mapped_errors,
    sse_data,
    status_error,
    stream_error,
)
from gatewright.backends.usage import anthropic_usage
from gatewright.core.backend import CallContext
from gatewright.core.catalog import Deployment, ModelEntry
from gatewright.core.errors import InvalidRequest, UnsupportedFeature, UpstreamError
from gatewright.core.events import (
    ChoiceEnd,
    Event,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from gatewright.core.types import (
    CacheMark,
    CoreRequest,
    FinishReason,
    ImagePart,
    Message,
    Reasoning,
    RedactedThinkingPart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
)

log = logging.getLogger("gatewright.backends.anthropic")

STOP_REASON: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Error types an upstream sends inside a stream → the HTTP status they stand for (retry decisions).
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# Thinking budget for a neutral effort when the caller gave no budget of its own.
THINKING_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}
MIN_THINKING_BUDGET = 1024  # Anthropic's floor

TOOL_CHOICE = {"auto": "auto", "required": "any", "named": "tool", "none": "none"}


def cache_control(mark: CacheMark | None) -> dict[str, Any] | None:
    if mark is None:
        return None
    return {"type": "ephemeral", "ttl": mark.ttl} if mark.ttl else {"type": "ephemeral"}


def _marked(block: dict[str, Any], mark: CacheMark | None) -> dict[str, Any]:
    control = cache_control(mark)
    if control is not None:
        block["cache_control"] = control
    return block


def _image(part: ImagePart) -> dict[str, Any]:
    if part.url.startswith("data:"):
        header, _, data = part.url.partition(",")
        media_type = part.media_type or header[5:].split(";", 1)[0]
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _tool_input(call: ToolCallPart) -> dict[str, Any]:
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"The arguments of tool call `{call.id}` must be a JSON object for this model.",
            param="messages",
            code="invalid_tool_arguments",
        )
    return value


def _blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append(_marked({"type": "text", "text": part.text}, part.cache))
        elif isinstance(part, ImagePart):
            blocks.append(_marked(_image(part), part.cache))
        elif isinstance(part, ToolCallPart):
            call = {"type": "tool_use", "id": part.id, "name": part.name, "input": _tool_input(part)}
            blocks.append(_marked(call, part.cache))
        elif isinstance(part, ToolResultPart):
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id, "content": part.content}
            if part.is_error:
                result["is_error"] = True
            blocks.append(_marked(result, part.cache))
        elif isinstance(part, ThinkingPart) and part.signature:
            # Anthropic accepts earlier thinking only with the signature it issued; others are dropped.
            blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
        elif isinstance(part, RedactedThinkingPart):
            blocks.append({"type": "redacted_thinking", "data": part.data})
    return blocks


def _system(messages: list[Message]) -> str | list[dict[str, Any]] | None:
    """A plain string, or text blocks when a part carries a cache breakpoint (only blocks can)."""
    if not messages:
        return None
    parts = [p for m in messages for p in m.parts if isinstance(p, TextPart)]
    if all(p.cache is None for p in parts):
        return "\n\n".join(m.text for m in messages)
    return [_marked({"type": "text", "text": p.text}, p.cache) for p in parts if p.text]


def wire_messages(messages: tuple[Message, ...]) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(system prompt, Messages turns): tool results ride in user turns, same-role turns merge."""
    system: list[Message] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.append(message)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return _system(system), turns


def _thinking(reasoning: Reasoning, max_tokens: int) -> dict[str, Any]:
    if reasoning.effort == "none":
        return {"type": "disabled"}
    budget = min(reasoning.budget_tokens or THINKING_BUDGET[reasoning.effort], max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        raise InvalidRequest(
            f"Thinking on this model needs max_tokens above {MIN_THINKING_BUDGET} "
            f"(the thinking budget comes out of it); got {max_tokens}.",
            param="max_tokens",
            code="thinking_budget_too_small",
        )
    return {"type": "enabled", "budget_tokens": budget}


def wire_request(request: CoreRequest, upstream_model: str, default_max_tokens: int) -> dict[str, Any]:
    if request.n != 1:
        raise UnsupportedFeature("This model returns one choice per request; set n to 1.", param="n")
    if request.response_format.kind != "text":
        raise UnsupportedFeature(
            "This model does not take response_format; describe the JSON in the prompt or use a tool.",
            param="response_format",
        )
    s = request.sampling
    max_tokens = s.max_tokens or default_max_tokens
    system, turns = wire_messages(request.messages)
    body: dict[str, Any] = {"model": upstream_model, "max_tokens": max_tokens, "messages": turns}
    if system:
        body["system"] = system
    # seed and the frequency/presence penalties have no Messages equivalent: they are hints, left out.
    optional = {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k}
    body.update({k: v for k, v in optional.items() if v is not None})
    if s.stop:
        body["stop_sequences"] = list(s.stop)
    if request.tools:
        body["tools"] = [
            _marked({"name": t.name, "description": t.description or "", "input_schema": t.parameters}, t.cache)
            for t in request.tools
        ]
        choice: dict[str, Any] = {"type": TOOL_CHOICE[request.tool_choice.mode]}
        if request.tool_choice.mode == "named":
            choice["name"] = request.tool_choice.name
        if not request.parallel_tool_calls and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    if request.reasoning is not None:
        body["thinking"] = _thinking(request.reasoning, max_tokens)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    body["stream"] = True  # always: a non-streaming answer is the stream collected
    return body


class _Blocks:
    """Anthropic content blocks → neutral events for one (the only) choice."""

    __slots__ = ("ctx", "kinds", "stop", "stop_sequence", "tools")

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.kinds: dict[int, str] = {}  # block index → block type
        self.tools: dict[int, int] = {}  # block index → dense tool-call index
        self.stop: str | None = None
        self.stop_sequence: str | None = None

    def start(self, index: int, block: dict[str, Any]) -> list[Event]:
        kind = str(block.get("type", ""))
        self.kinds[index] = kind
        if kind == "text":
            return self._counted([TextDelta(0, block["text"])] if block.get("text") else [])
        if kind == "thinking":
            events: list[Event] = [ReasoningDelta(0, block["thinking"])] if block.get("thinking") else []
            if block.get("signature"):  # a whole answer carries it; a stream sends a signature_delta
                events.append(ReasoningSignature(0, str(block["signature"])))
            return self._counted(events)
        if kind == "redacted_thinking":
            return [RedactedReasoning(0, str(block.get("data", "")))]
        if kind == "tool_use":
            self.tools[index] = dense = len(self.tools)
            events = [ToolCallStart(0, dense, str(block.get("id", "")), str(block.get("name", "")))]
            if block.get("input"):  # a whole answer carries the input; a stream sends it as deltas
                events.append(ToolCallDelta(0, dense, orjson.dumps(block["input"]).decode()))
            return self._counted(events)
        return []  # server tools, ...: nothing the neutral stream can carry

    def delta(self, index: int, delta: dict[str, Any]) -> list[Event]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return self._counted([TextDelta(0, delta["text"])])
        if kind == "thinking_delta" and delta.get("thinking"):
            return self._counted([ReasoningDelta(0, delta["thinking"])])
        if kind == "input_json_delta" and delta.get("partial_json") and index in self.tools:
            return self._counted([ToolCallDelta(0, self.tools[index], delta["partial_json"])])
        if kind == "signature_delta" and delta.get("signature"):
            return [ReasoningSignature(0, str(delta["signature"]))]
        return []  # citations_delta, empty fragments

    def end(self) -> ChoiceEnd:
        reason = STOP_REASON.get(self.stop or "end_turn", "stop")
        return ChoiceEnd(0, reason, self.stop_sequence if self.stop == "stop_sequence" else None)

    def _counted(self, events: list[Event]) -> list[Event]:
        # Live meter for an abandoned stream: about one token per delta until the final count comes.
        self.ctx.usage.output_tokens += sum(1 for e in events if not isinstance(e, (ToolCallStart, ReasoningSignature)))
        return events


def _error(deployment: Deployment, payload: dict[str, Any]) -> UpstreamError:
    error = payload.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    return stream_error(deployment, payload, ERROR_STATUS.get(str(kind), 502))


# What Messages' count_tokens takes of a request: the prompt, not the output settings.
COUNTED_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking")

# Tokens of the tool-use instructions Anthropic adds to the prompt when tools are given, by
# tool_choice (Anthropic's tool-use guide, "Pricing": 346 for auto/none, 313 for any/tool).
TOOLS_PROMPT = {"auto": 346, "none": 346, "required": 313, "named": 313}


class AnthropicBackend(HttpUpstream):
    path = "/messages"
    kind = "anthropic"
    image_tokens = staticmethod(anthropic_image_tokens)
    tools_prompt = TOOLS_PROMPT

    def __init__(self, deployment: Deployment, entry: ModelEntry, env: BackendEnv | None = None) -> None:
        super().__init__(deployment, entry)
        options = AnthropicOptions.model_validate(deployment.options)
        self.headers = {
            "content-type": "application/json",
            "anthropic-version": options.anthropic_version,
            **deployment.headers,
        }
        key = deployment.api_key
        if key:
            if options.auth == "bearer":
                self.headers["authorization"] = f"Bearer {key}"
            else:
                self.headers["x-api-key"] = key

    def encode(self, request: CoreRequest) -> bytes:
        return orjson.dumps(wire_request(request, self.upstream_model, self.entry.max_output))

    async def count_tokens(self, request: CoreRequest) -> int:
        """Anthropic's own count (``POST /messages/count_tokens``): images, tools and the tool-use
        instructions exactly as the model sees them. A server without that endpoint, or one that
        fails, leaves the estimate; a request the upstream calls wrong is the caller's 400."""
        full = wire_request(request, self.upstream_model, self.entry.max_output)
        body = orjson.dumps({k: full[k] for k in COUNTED_FIELDS if k in full})
        try:
            with mapped_errors(self.deployment):
                answer = await client_for(self.deployment).post(self.url + "/count_tokens", body, self.headers)
        except UpstreamError as error:
            log.warning("count_tokens at %s failed, estimating: %s", self.deployment.name, error.message)
            return self.estimate(request)
        if answer.status in CALLER_STATUSES:
            raise status_error(self.deployment, answer.status, answer.headers, answer.body)
        try:
            counted = orjson.loads(answer.body).get("input_tokens") if answer.status == 200 else None
        except (orjson.JSONDecodeError, AttributeError):
            counted = None
        if not isinstance(counted, int):
            log.warning("count_tokens at %s answered %s, estimating", self.deployment.name, answer.status)
            return self.estimate(request)
        return counted

    async def streamed(self, response: Streaming, ctx: CallContext, request: CoreRequest) -> AsyncIterator[Event]:
        blocks = _Blocks(ctx)
        usage: Usage | None = None
        counted = False  # message_start says output_tokens 1; only message_delta has the real count
        async for _, data in sse_data(response):
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            kind = payload.get("type") if isinstance(payload, dict) else None
            if kind == "content_block_delta":
                for event in blocks.delta(int(payload.get("index", 0)), payload.get("delta") or {}):
                    yield event
            elif kind == "content_block_start":
                for event in blocks.start(int(payload.get("index", 0)), payload.get("content_block") or {}):
                    yield event
            elif kind == "message_start":
                usage = anthropic_usage((payload.get("message") or {}).get("usage"))
                ctx.usage.input_tokens = usage.input_tokens
            elif kind == "message_delta":
                delta = payload.get("delta") or {}
                blocks.stop = delta.get("stop_reason") or blocks.stop
                blocks.stop_sequence = delta.get("stop_sequence") or blocks.stop_sequence
                reported = payload.get("usage")
                counted = counted or (isinstance(reported, dict) and "output_tokens" in reported)
                usage = anthropic_usage(reported, usage)
            elif kind == "message_stop":
                yield blocks.end()
                if usage is None or not counted:
                    # Nothing (or no final output count) reported: bill what was seen, marked estimated.
                    input_tokens = usage.input_tokens if usage is not None else ctx.usage.input_tokens
                    usage = Usage(input_tokens, ctx.usage.output_tokens, estimated=True)
                ctx.usage = usage
                yield UsageReport(usage)
                return
            elif kind == "error":
                raise _error(self.deployment, payload)
            # ping, content_block_stop and event types added later need nothing
        raise UpstreamError(f"upstream {self.deployment.name} ended its stream before message_stop")
