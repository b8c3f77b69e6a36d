"""OpenAI Chat Completions ⇄ core: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gatewright.api.openai import schemas as w
from gatewright.core.errors import InvalidRequest, UnsupportedFeature
from gatewright.core.types import (
    TEXT_FORMAT,
    TOOL_CHOICE_AUTO,
    TOOL_CHOICE_NONE,
    CacheMark,
    Choice,
    CoreRequest,
    CoreResponse,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ReasoningEffort,
    RedactedThinkingPart,
    ResponseFormat,
    Sampling,
    TextPart,
    ThinkingPart,
    TokenLogprob,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    Usage,
)

MAX_STOP = 4

# OpenAI's effort names → the neutral scale (the neutral scale has no "minimal"/"xhigh").
EFFORT: dict[str, ReasoningEffort] = {
    "none": "none",
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}


# OpenAI request fields gatewright cannot act on, refused with a 400 naming the field when their value
# would change the answer (a harmless value passes). Fields that are only metadata (metadata, store,
# service_tier, safety_identifier, prompt_cache_*) are accepted and ignored; docs/openai-chat.md.
REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "logit_bias": (lambda v: not v, "token biases (logit_bias) are not supported"),
    "modalities": (lambda v: v is None or v == ["text"], 'only text output is supported (modalities: ["text"])'),
    "audio": (lambda v: v is None, "audio output is not supported"),
    "web_search_options": (lambda v: v is None, "web search is not supported"),
    "verbosity": (lambda v: v in (None, "medium"), "verbosity other than medium is not supported"),
    "moderation": (lambda v: v is None, "moderation of the request and the answer is not supported"),
    "functions": (lambda v: not v, "the legacy `functions` field is not supported; send `tools` instead"),
    "function_call": (lambda v: v is None, "the legacy `function_call` field is not supported; send `tool_choice`"),
}


def _refuse_unsupported(req: w.ChatCompletionRequest) -> None:
    if REFUSED.keys().isdisjoint(req.model_fields_set):
        return  # none was sent (their defaults are harmless): the usual request, one set test
    for name, (harmless, why) in REFUSED.items():
        if not harmless(getattr(req, name)):
            raise UnsupportedFeature(
                f"Invalid '{name}': {why} by gatewright.", param=name, code="unsupported_parameter"
            )


def _cache(part: Any) -> CacheMark | None:
    mark = getattr(part, "cache_control", None)
    return CacheMark(mark.ttl) if mark is not None else None


def _text_of(content: str | list[w.TextContent]) -> str:
    return content if isinstance(content, str) else "".join(p.text for p in content)


def _text_parts(content: str | list[w.TextContent]) -> tuple[TextPart, ...]:
    """System and tool content: one text part, or one per cache breakpoint when the parts carry any."""
    if isinstance(content, str):
        return (TextPart(content),)
    if not any(p.cache_control is not None for p in content):
        return (TextPart(_text_of(content)),)
    parts: list[TextPart] = []
    run: list[str] = []
    for p in content:
        run.append(p.text)
        if p.cache_control is not None:
            parts.append(TextPart("".join(run), _cache(p)))
            run = []
    if run:
        parts.append(TextPart("".join(run)))
    return tuple(parts)


def _user_parts(content: str | list[Any], index: int) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    parts: list[Part] = []
    for k, part in enumerate(content):
        if isinstance(part, w.TextContent):
            parts.append(TextPart(part.text, _cache(part)))
        elif isinstance(part, w.ImageContent):
            parts.append(ImagePart(part.image_url.url, cache=_cache(part)))
        else:
            raise InvalidRequest(
                f"Content parts of type `{part.type}` are not supported by gatewright.",
                param=f"messages[{index}].content[{k}].type",
                code="unsupported_content_type",
            )
    return tuple(parts)


def _detail_part(detail: w.ReasoningDetail) -> Part:
    if detail.type == "reasoning.encrypted":
        return RedactedThinkingPart(detail.data or "")
    return ThinkingPart(detail.text or detail.summary or "", detail.signature)


def reasoning_details(choice: Choice) -> list[dict[str, Any]]:
    """OpenRouter's ``reasoning_details`` for reasoning a provider signed or encrypted; none otherwise."""
    details: list[dict[str, Any]] = []
    if choice.reasoning_signature:
        details.append({"type": "reasoning.text", "text": choice.reasoning, "signature": choice.reasoning_signature})
    details.extend({"type": "reasoning.encrypted", "data": data} for data in choice.redacted_reasoning)
    for index, detail in enumerate(details):
        detail["index"] = index
    return details


def _assistant_parts(message: w.AssistantMessage) -> tuple[Part, ...]:
    parts: list[Part] = []
    if message.reasoning_details:
        parts.extend(_detail_part(d) for d in message.reasoning_details)
    elif message.reasoning_content:
        parts.append(ThinkingPart(message.reasoning_content))
    content = message.content
    if isinstance(content, str):
        if content:
            parts.append(TextPart(content))
    elif content:
        text = "".join(p.text for p in content if isinstance(p, w.TextContent))
        if text:
            parts.append(TextPart(text))
    for call in message.tool_calls or ():
        parts.append(ToolCallPart(call.id, call.function.name, call.function.arguments))
    return tuple(parts)


def _check_answered(pending: dict[str, int]) -> None:
    """As OpenAI: every tool call of an assistant message is answered before the conversation goes on."""
    if pending:
        at = next(iter(pending.values()))
        missing = ", ".join(pending)
        raise InvalidRequest(
            f"Invalid 'messages[{at}].tool_calls': an assistant message with 'tool_calls' must be followed "
            f"by tool messages responding to each 'tool_call_id'; no response for: {missing}.",
            param=f"messages[{at}].tool_calls",
        )


def _messages(messages: list[Any]) -> tuple[Message, ...]:
    out: list[Message] = []
    pending: dict[str, int] = {}  # tool call id → index of the assistant message that made it
    for i, m in enumerate(messages):
        if isinstance(m, w.ToolMessage):
            if pending.pop(m.tool_call_id, None) is None:
                raise InvalidRequest(
                    f"Invalid 'messages[{i}].tool_call_id': a tool message must answer a tool call of the "
                    f"assistant message just before it, and none has the id '{m.tool_call_id}'.",
                    param=f"messages[{i}].tool_call_id",
                )
            mark = None if isinstance(m.content, str) else next((_cache(p) for p in m.content if p.cache_control), None)
            out.append(Message("tool", (ToolResultPart(m.tool_call_id, _text_of(m.content), cache=mark),), m.name))
            continue
        _check_answered(pending)
        if isinstance(m, (w.SystemMessage, w.DeveloperMessage)):
            out.append(Message("system", _text_parts(m.content), m.name))
        elif isinstance(m, w.UserMessage):
            out.append(Message("user", _user_parts(m.content, i), m.name))
        else:
            pending = {c.id: i for c in m.tool_calls or ()}
            out.append(Message("assistant", _assistant_parts(m), m.name))
    _check_answered(pending)
    return tuple(out)


def _stop(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if len(items) > MAX_STOP:
        raise InvalidRequest(
            f"Invalid 'stop': at most {MAX_STOP} sequences are allowed, got {len(items)}.", param="stop"
        )
    if any(not s for s in items):
        raise InvalidRequest("Invalid 'stop': sequences must not be empty.", param="stop")
    return tuple(items)


def _parameters(function: w.FunctionDef, index: int) -> dict[str, Any]:
    return function_parameters(function.name, function.parameters, f"tools[{index}].function.parameters")


def function_parameters(name: str, parameters: dict[str, Any] | None, param: str) -> dict[str, Any]:
    """A function's parameters: a JSON Schema for an object (as OpenAI requires), or none at all
    (shared with the Responses dialect, whose function tools carry the same rule)."""
    if parameters is None:
        return {"type": "object", "properties": {}}
    kind = parameters.get("type", "object")
    if kind != "object":
        raise InvalidRequest(
            f"Invalid schema for function '{name}': schema must be a JSON Schema of "
            f"'type: \"object\"', got 'type: {orjson.dumps(kind).decode()}'.",
            param=param,
            code="invalid_function_parameters",
        )
    return parameters


def _tools(req: w.ChatCompletionRequest) -> tuple[tuple[ToolSpec, ...], ToolChoice]:
    tools = tuple(
        ToolSpec(t.function.name, t.function.description, _parameters(t.function, i), bool(t.function.strict))
        for i, t in enumerate(req.tools or ())
    )
    first: dict[str, int] = {}
    for i, tool in enumerate(tools):
        if first.setdefault(tool.name, i) != i:
            raise InvalidRequest(
                f"Invalid 'tools[{i}].function.name': the function name '{tool.name}' is already used by "
                f"'tools[{first[tool.name]}]'; function names must be unique.",
                param=f"tools[{i}].function.name",
            )
    if req.parallel_tool_calls is not None and not tools:
        raise InvalidRequest(
            "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when "
            "'tools' are specified.",
            param="parallel_tool_calls",
        )
    choice = req.tool_choice
    if choice is None:
        return tools, TOOL_CHOICE_AUTO if tools else TOOL_CHOICE_NONE
    if isinstance(choice, w.CustomToolChoice):
        raise UnsupportedFeature(
            "Invalid 'tool_choice': custom tools are not supported by gatewright; use function tools.",
            param="tool_choice.type",
            code="unsupported_tool_type",
        )
    if isinstance(choice, w.AllowedToolsChoice):
        return _allowed(tools, choice.allowed_tools, first)
    if isinstance(choice, w.NamedToolChoice):
        if choice.function.name not in first:
            raise InvalidRequest(
                f"Invalid 'tool_choice.function.name': function '{choice.function.name}' is not in 'tools'.",
                param="tool_choice.function.name",
            )
        return tools, ToolChoice("named", choice.function.name)
    if choice != "none" and not tools:
        raise InvalidRequest(f"Invalid 'tool_choice': '{choice}' needs 'tools' to be specified.", param="tool_choice")
    return tools, ToolChoice(choice)


def _allowed(
    tools: tuple[ToolSpec, ...], allowed: w.AllowedTools, first: dict[str, int]
) -> tuple[tuple[ToolSpec, ...], ToolChoice]:
    """``allowed_tools``: the model may call only these (of ``tools``), in the given mode."""
    names: set[str] = set()
    for k, item in enumerate(allowed.tools):
        function = item.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if item.get("type") != "function" or not isinstance(name, str) or name not in first:
            raise InvalidRequest(
                f"Invalid 'tool_choice.allowed_tools.tools[{k}]': must name a function in 'tools', "
                'as {"type": "function", "function": {"name": ...}}.',
                param=f"tool_choice.allowed_tools.tools[{k}]",
            )
        names.add(name)
    if not names:
        raise InvalidRequest(
            "Invalid 'tool_choice.allowed_tools.tools': name at least one tool.",
            param="tool_choice.allowed_tools.tools",
        )
    return tuple(t for t in tools if t.name in names), ToolChoice(allowed.mode)


def _response_format(fmt: Any) -> ResponseFormat:
    if fmt is None or isinstance(fmt, w.TextFormat):
        return TEXT_FORMAT
    if isinstance(fmt, w.JsonObjectFormat):
        return ResponseFormat("json_object")
    spec = fmt.json_schema
    if spec.schema_ is None:
        raise InvalidRequest(
            "Invalid 'response_format.json_schema': 'schema' is required.",
            param="response_format.json_schema.schema",
        )
    return ResponseFormat("json_schema", spec.schema_, spec.name, bool(spec.strict))


def _reasoning(req: w.ChatCompletionRequest) -> Reasoning | None:
    if req.thinking is not None:
        if req.thinking.type == "disabled":
            return Reasoning("none")
        return Reasoning("medium", req.thinking.budget_tokens, required=True)
    if req.reasoning is not None:
        r = req.reasoning
        if r.enabled is False:
            return Reasoning("none")
        effort = EFFORT[r.effort] if r.effort else "medium"
        return Reasoning(effort, r.max_tokens, required=bool(r.enabled))
    if req.enable_thinking is not None:
        return Reasoning("medium", req.thinking_budget) if req.enable_thinking else Reasoning("none")
    if req.reasoning_effort is not None:
        return Reasoning(EFFORT[req.reasoning_effort])
    return None


def to_core(req: w.ChatCompletionRequest) -> CoreRequest:
    _refuse_unsupported(req)
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("Invalid 'stream_options': only allowed when 'stream' is true.", param="stream_options")
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequest("Invalid 'top_logprobs': 'logprobs' must be true to use it.", param="top_logprobs")
    tools, tool_choice = _tools(req)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    return CoreRequest(
        model=req.model,
        messages=_messages(req.messages),
        sampling=Sampling(
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            frequency_penalty=req.frequency_penalty,
            presence_penalty=req.presence_penalty,
            seed=req.seed,
            max_tokens=max_tokens,
            stop=_stop(req.stop),
        ),
        n=req.n or 1,
        logprobs=bool(req.logprobs),
        top_logprobs=req.top_logprobs or 0,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        response_format=_response_format(req.response_format),
        reasoning=_reasoning(req),
        stream=bool(req.stream),
        user=req.user,
    )


def usage_dict(usage: Usage) -> dict[str, Any]:
    prompt_details: dict[str, int] = {"cached_tokens": usage.cached_tokens, "audio_tokens": 0}
    if usage.cache_write_tokens:
        # Not OpenAI's (it has no priced cache writes): OpenRouter's name for the part of the prompt
        # written to a provider's cache, so a caller can see why it cost more.
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def logprobs_dict(items: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.bytes),
                "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top],
            }
            for lp in items
        ],
        "refusal": None,
    }


def _choice_dict(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.text if (choice.text or not choice.tool_calls) else None,
        "refusal": None,
    }
    if choice.reasoning:
        message["reasoning_content"] = choice.reasoning
    details = reasoning_details(choice)
    if details:
        message["reasoning_details"] = details
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in choice.tool_calls
        ]
    return {
        "index": choice.index,
        "message": message,
        "logprobs": logprobs_dict(choice.logprobs) if choice.logprobs is not None else None,
        "finish_reason": choice.finish_reason,
    }


def meta_dict(response: CoreResponse) -> dict[str, Any] | None:
    if response.cost is None:
        return None
    usage: dict[str, Any] = {"credits_used": response.cost.credits, "usd_spent": response.cost.usd}
    if response.usage.estimated:
        usage["estimated"] = True  # the token counts are the gateway's guess (the upstream reported none)
    return {"usage": usage}


def from_core(response: CoreResponse) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": response.id,
        "object": "chat.completion",
        "created": response.created,
        "model": response.model,
        "choices": [_choice_dict(c) for c in response.choices],
        "usage": usage_dict(response.usage),
    }
    # OpenAI types system_fingerprint as a string: gatewright has none to give, so it is omitted
    # rather than sent as null. The reference platform sends the request's id beside the answer's.
    if response.request_id is not None:
        body["request_id"] = response.request_id
    meta = meta_dict(response)
    if meta is not None:
        body["meta"] = meta
    return body


def dumps(body: Any) -> bytes:
    return orjson.dumps(body)
