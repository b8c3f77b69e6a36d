"""Anthropic Messages ⇄ core: pure functions, no I/O.

Conversions worth knowing:
- ``tool_result`` blocks arrive inside user messages; core keeps them as ``tool`` messages, in the
  order the blocks came, so Messages and Chat Completions give backends the same conversation.
- Anthropic's ``usage.input_tokens`` excludes cache reads and writes; core's is the whole prompt.
- ``thinking: {type: enabled}`` is an explicit demand (``Reasoning.required``): a model that cannot
  reason answers 400 instead of silently not thinking.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from gatewright.api.anthropic import schemas as w
from gatewright.core.errors import InvalidRequest, UnsupportedFeature
from gatewright.core.types import (
    TOOL_CHOICE_AUTO,
    TOOL_CHOICE_NONE,
    CacheMark,
    Choice,
    CoreRequest,
    CoreResponse,
    Cost,
    FinishReason,
    ImagePart,
    Message,
    Part,
    Reasoning,
    RedactedThinkingPart,
    Sampling,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    Usage,
)

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]

# Core finish reasons → Anthropic's; a matched stop sequence overrides to "stop_sequence".
STOP_REASON: dict[FinishReason, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

TOOL_CHOICE_MODE: dict[str, Literal["none", "auto", "required", "named"]] = {
    "auto": "auto",
    "any": "required",
    "tool": "named",
    "none": "none",
}

CLIENT_TOOL_TYPES = frozenset({None, "custom"})

# Separate text blocks of one system prompt or tool result stay separate lines to the model.
BLOCK_SEPARATOR = "\n"


def _cache(block: Any) -> CacheMark | None:
    mark = getattr(block, "cache_control", None)
    return CacheMark(mark.ttl) if mark is not None else None


def _image(block: w.ImageBlock) -> ImagePart:
    source = block.source
    if isinstance(source, w.Base64Source):
        return ImagePart(f"data:{source.media_type};base64,{source.data}", source.media_type, _cache(block))
    return ImagePart(source.url, cache=_cache(block))


def _system_parts(blocks: list[w.TextBlock]) -> tuple[TextPart, ...]:
    """The system prompt: one text part, or one per cache breakpoint (each ending at its block, the
    separator going with the text that follows), so the breakpoints stay where the caller put them."""
    if not any(b.cache_control is not None for b in blocks):
        return (TextPart(BLOCK_SEPARATOR.join(b.text for b in blocks)),)
    parts: list[TextPart] = []
    run: list[str] = []
    for b in blocks:
        run.append(b.text)
        if b.cache_control is not None:
            lead = BLOCK_SEPARATOR if parts else ""
            parts.append(TextPart(lead + BLOCK_SEPARATOR.join(run), _cache(b)))
            run = []
    if run:
        parts.append(TextPart(BLOCK_SEPARATOR + BLOCK_SEPARATOR.join(run)))
    return tuple(parts)


def _tool_result(block: w.ToolResultBlock, param: str) -> ToolResultPart:
    texts: list[str] = []
    for j, item in enumerate(block.content):
        if not isinstance(item, w.TextBlock):
            raise UnsupportedFeature(
                "Images inside tool_result blocks are not supported by gatewright; "
                "send the image as its own image block in the user message.",
                param=f"{param}.content[{j}]",
                code="unsupported_content_type",
            )
        texts.append(item.text)
    return ToolResultPart(block.tool_use_id, BLOCK_SEPARATOR.join(texts), block.is_error, _cache(block))


def _user_messages(message: w.UserMessage, i: int, known_calls: set[str]) -> list[Message]:
    """A user turn → core messages: runs of text/images as ``user``, each tool result as ``tool``."""
    out: list[Message] = []
    pending: list[Part] = []
    for k, block in enumerate(message.content):
        if isinstance(block, w.TextBlock):
            pending.append(TextPart(block.text, _cache(block)))
        elif isinstance(block, w.ImageBlock):
            pending.append(_image(block))
        else:
            param = f"messages[{i}].content[{k}]"
            if block.tool_use_id not in known_calls:
                raise InvalidRequest(
                    f"{param}.tool_use_id: no earlier assistant message has a tool_use block "
                    f"with id '{block.tool_use_id}'.",
                    param=f"{param}.tool_use_id",
                )
            if pending:
                out.append(Message("user", tuple(pending)))
                pending = []
            out.append(Message("tool", (_tool_result(block, param),)))
    if pending or not out:
        out.append(Message("user", tuple(pending)))
    return out


def _assistant_message(message: w.AssistantMessage, known_calls: set[str]) -> Message:
    parts: list[Part] = []
    for block in message.content:
        if isinstance(block, w.TextBlock):
            if block.text:
                parts.append(TextPart(block.text, _cache(block)))
        elif isinstance(block, w.ToolUseBlock):
            known_calls.add(block.id)
            parts.append(ToolCallPart(block.id, block.name, orjson.dumps(block.input).decode(), _cache(block)))
        elif isinstance(block, w.ThinkingBlock):
            parts.append(ThinkingPart(block.thinking, block.signature))
        else:
            # Opaque data only Anthropic's models read: kept, so an Anthropic-style upstream gets it
            # back unchanged (other backends skip it).
            parts.append(RedactedThinkingPart(block.data))
    return Message("assistant", tuple(parts))


def _messages(req: w.CountTokensRequest) -> tuple[Message, ...]:
    out: list[Message] = []
    if req.system:
        out.append(Message("system", _system_parts(req.system)))
    known_calls: set[str] = set()
    for i, message in enumerate(req.messages):
        if isinstance(message, w.UserMessage):
            out.extend(_user_messages(message, i, known_calls))
        else:
            out.append(_assistant_message(message, known_calls))
    return tuple(out)


def _tools(req: w.CountTokensRequest) -> tuple[tuple[ToolSpec, ...], ToolChoice, bool]:
    specs: list[ToolSpec] = []
    for i, tool in enumerate(req.tools or ()):
        if tool.type not in CLIENT_TOOL_TYPES:
            raise UnsupportedFeature(
                f"Server tools of type `{tool.type}` are not supported by gatewright; "
                "define a client tool with name, description and input_schema.",
                param=f"tools[{i}].type",
                code="unsupported_tool_type",
            )
        if tool.input_schema is None:
            raise InvalidRequest(
                f"Missing required parameter: 'tools[{i}].input_schema'.",
                param=f"tools[{i}].input_schema",
                code="missing_required_parameter",
            )
        specs.append(ToolSpec(tool.name, tool.description, tool.input_schema, bool(tool.strict), _cache(tool)))
    tools = tuple(specs)
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("tools: tool names must be unique.", param="tools")
    choice = req.tool_choice
    if choice is None:
        return tools, (TOOL_CHOICE_AUTO if tools else TOOL_CHOICE_NONE), True
    parallel = not getattr(choice, "disable_parallel_tool_use", False)
    mode = TOOL_CHOICE_MODE[choice.type]
    if mode == "none":
        return tools, TOOL_CHOICE_NONE, parallel
    if not tools:
        raise InvalidRequest(
            f"tool_choice: type '{choice.type}' may only be specified while providing tools.", param="tool_choice"
        )
    if isinstance(choice, w.ToolChoiceTool):
        if choice.name not in names:
            raise InvalidRequest(f"tool_choice.name: tool '{choice.name}' is not in 'tools'.", param="tool_choice.name")
        return tools, ToolChoice("named", choice.name), parallel
    return tools, ToolChoice(mode), parallel


def _reasoning(thinking: w.Thinking | None, max_tokens: int | None) -> Reasoning | None:
    if thinking is None:
        return None
    if isinstance(thinking, w.ThinkingEnabled):
        if max_tokens is not None and thinking.budget_tokens >= max_tokens:
            raise InvalidRequest(
                f"max_tokens ({max_tokens}) must be greater than thinking.budget_tokens ({thinking.budget_tokens}).",
                param="thinking.budget_tokens",
            )
        return Reasoning("medium", thinking.budget_tokens, required=True)
    if isinstance(thinking, w.ThinkingDisabled):
        return Reasoning("none")
    return Reasoning("medium")  # adaptive: the model decides, so a model that cannot reason just answers


def _stop(stop: list[str] | None) -> tuple[str, ...]:
    if not stop:
        return ()
    if any(not s for s in stop):
        raise InvalidRequest("stop_sequences: sequences must not be empty.", param="stop_sequences")
    return tuple(stop)


def to_core(req: w.MessagesRequest) -> CoreRequest:
    if isinstance(req.messages[-1], w.AssistantMessage):
        # Continuing a partial assistant turn (prefill) needs raw-prompt control no backend exposes.
        raise UnsupportedFeature(
            "messages: the final message is from the assistant (prefill); gatewright cannot continue a "
            "partial assistant turn. End the conversation with a user message.",
            param="messages",
            code="prefill_not_supported",
        )
    tools, tool_choice, parallel = _tools(req)
    return CoreRequest(
        model=req.model,
        messages=_messages(req),
        sampling=Sampling(
            temperature=req.temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            seed=req.seed,
            max_tokens=req.max_tokens,
            stop=_stop(req.stop_sequences),
        ),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        reasoning=_reasoning(req.thinking, req.max_tokens),
        stream=bool(req.stream),
        user=req.metadata.user_id if req.metadata else None,
    )


def count_request(req: w.CountTokensRequest) -> CoreRequest:
    """The request whose prompt ``count_tokens`` measures (no output settings)."""
    tools, tool_choice, parallel = _tools(req)
    return CoreRequest(
        model=req.model,
        messages=_messages(req),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        reasoning=_reasoning(req.thinking, None),
    )


def stop_reason(finish: FinishReason, stop_sequence: str | None) -> StopReason:
    return "stop_sequence" if stop_sequence is not None else STOP_REASON[finish]


def usage_dict(usage: Usage) -> dict[str, int]:
    uncached = usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens
    return {
        "input_tokens": max(uncached, 0),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object Anthropic's ``input`` must be."""
    try:
        value = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        value = None
    # A model that wrote something other than a JSON object: keep its text rather than lose it.
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def content_blocks(choice: Choice) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if choice.reasoning or choice.reasoning_signature:
        signature = choice.reasoning_signature or ""
        blocks.append({"type": "thinking", "thinking": choice.reasoning, "signature": signature})
    blocks.extend({"type": "redacted_thinking", "data": data} for data in choice.redacted_reasoning)
    if choice.text:
        blocks.append({"type": "text", "text": choice.text})
    for call in choice.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(call.arguments)})
    return blocks


def meta_dict(cost: Cost | None, usage: Usage) -> dict[str, Any] | None:
    """gatewright extension: the request's cost, as the OpenAI dialect reports it."""
    if cost is None:
        return None
    meta: dict[str, Any] = {"credits_used": cost.credits, "usd_spent": cost.usd}
    if usage.estimated:
        meta["estimated"] = True  # the token counts are the gateway's guess (the upstream reported none)
    return {"usage": meta}


def from_core(response: CoreResponse) -> dict[str, Any]:
    choice = response.choices[0]
    body: dict[str, Any] = {
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content_blocks(choice),
        "stop_reason": stop_reason(choice.finish_reason or "stop", choice.stop_sequence),
        "stop_sequence": choice.stop_sequence,
        "usage": usage_dict(response.usage),
    }
    meta = meta_dict(response.cost, response.usage)
    if meta is not None:
        body["meta"] = meta
    return body
