"""Responses API request ⇄ core: pure functions, no I/O.

A request's conversation is a list of items (messages, function calls and their outputs,
reasoning); ``to_core`` folds them into the neutral messages: consecutive assistant items
(reasoning, text, calls) become one assistant message, each ``function_call_output`` a tool
message. ``resource`` gives an item the stored shape ``GET .../input_items`` lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gatewright.api.openai.translate import function_parameters
from gatewright.api.responses import schemas as w
from gatewright.core.errors import InvalidRequest, UnsupportedFeature
from gatewright.core.ids import random_hex
from gatewright.core.types import (
    TEXT_FORMAT,
    TOOL_CHOICE_AUTO,
    TOOL_CHOICE_NONE,
    CoreRequest,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ReasoningEffort,
    ResponseFormat,
    Sampling,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
)

# OpenAI's effort names → the neutral scale.
EFFORT: dict[str, ReasoningEffort] = {
    "none": "none",
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}
LOGPROBS = "message.output_text.logprobs"
ITEM_ID_PREFIX = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}

# Fields OpenAI knows that gatewright refuses, with the reason (checked when set).
REFUSED: dict[str, str] = {
    "background": "background responses are not supported by gatewright; stream instead",
    "conversation": "conversation objects are not supported by gatewright; use previous_response_id",
    "prompt": "stored prompt templates are not supported by gatewright; send instructions and input",
    "context_management": "server-side context compaction is not supported by gatewright",
    "moderation": "moderation is not supported by gatewright",
}


def item_id(kind: str) -> str:
    return ITEM_ID_PREFIX.get(kind, "item_") + random_hex(16)


def _unsupported(what: str, kind: str, param: str) -> UnsupportedFeature:
    return UnsupportedFeature(
        f"{what} of type `{kind}` are not supported by gatewright.", param=param, code="unsupported_type"
    )


def check_refused(req: w.CreateResponse) -> None:
    for name, why in REFUSED.items():
        value = getattr(req, name)
        if value is not None and value is not False:
            raise UnsupportedFeature(f"Invalid '{name}': {why}.", param=name, code="unsupported_parameter")
    if req.truncation == "auto":
        raise UnsupportedFeature(
            "Invalid 'truncation': 'auto' is not supported by gatewright; an input larger than the model's "
            "context window is refused with a 400 (truncation 'disabled').",
            param="truncation",
            code="unsupported_parameter",
        )
    if req.service_tier not in (None, "auto", "default"):
        raise UnsupportedFeature(
            f"Invalid 'service_tier': gatewright serves every request at one tier ('auto' or 'default'), "
            f"got '{req.service_tier}'.",
            param="service_tier",
            code="unsupported_parameter",
        )
    if req.text is not None and req.text.verbosity not in (None, "medium"):
        raise UnsupportedFeature(
            "Invalid 'text.verbosity': gatewright's models have no verbosity control; leave it unset or 'medium'.",
            param="text.verbosity",
            code="unsupported_parameter",
        )
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("Invalid 'stream_options': only allowed when 'stream' is true.", param="stream_options")
    for key, value in (req.metadata or {}).items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidRequest(
                "Invalid 'metadata': keys are at most 64 characters and values at most 512.", param="metadata"
            )


# -- items → messages -----------------------------------------------------------------------


def _text_parts(content: str | Sequence[Any], param: str, *, images: bool) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    parts: list[Part] = []
    for k, part in enumerate(content):
        at = f"{param}[{k}]"
        if isinstance(part, (w.InputText, w.OutputText)):
            parts.append(TextPart(part.text))
        elif isinstance(part, w.Refusal):
            parts.append(TextPart(part.refusal))
        elif isinstance(part, w.InputImage) and images:
            if not part.image_url:
                raise UnsupportedFeature(
                    "Images by 'file_id' are not supported by gatewright (it has no file store); send "
                    "'image_url' (an http(s) or data: URL).",
                    param=f"{at}.file_id",
                    code="unsupported_parameter",
                )
            parts.append(ImagePart(part.image_url))
        else:
            raise _unsupported("Content parts", part.type, f"{at}.type")
    return tuple(parts)


def _joined(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    """Adjacent text parts as one (system and assistant text is plain text)."""
    text = "".join(p.text for p in parts if isinstance(p, TextPart))
    return (TextPart(text),) if text else ()


class _Folder:
    """Builds the neutral messages from items, checking every call is answered, as OpenAI does."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.calls: dict[str, int] = {}  # call id → index of the item that made it
        self.pending: dict[str, int] = {}

    def _assistant(self, *parts: Part, join: bool) -> None:
        last = self.messages[-1] if self.messages else None
        if join and last is not None and last.role == "assistant":
            self.messages[-1] = Message("assistant", (*last.parts, *parts))
        else:
            self.messages.append(Message("assistant", tuple(parts)))

    def _check_answered(self) -> None:
        if self.pending:
            call_id, at = next(iter(self.pending.items()))
            raise InvalidRequest(
                f"No tool output found for function call {call_id}: every 'function_call' item needs a "
                "'function_call_output' item with its call_id before the conversation goes on.",
                param=f"input[{at}]",
                code="missing_function_call_output",
            )

    def add(self, index: int, item: Any) -> None:
        at = f"input[{index}]"
        if isinstance(item, w.FunctionCallOutputItem):
            if item.call_id not in self.calls:
                raise InvalidRequest(
                    f"No tool call found for function call output with call_id {item.call_id}.",
                    param=f"{at}.call_id",
                    code="unknown_call_id",
                )
            self.pending.pop(item.call_id, None)
            output = item.output if isinstance(item.output, str) else _joined_text(item.output, f"{at}.output")
            self.messages.append(Message("tool", (ToolResultPart(item.call_id, output),)))
            return
        if isinstance(item, w.FunctionCallItem):
            self.calls[item.call_id] = index
            self.pending[item.call_id] = index
            self._assistant(ToolCallPart(item.call_id, item.name, item.arguments), join=True)
            return
        self._check_answered()
        if isinstance(item, w.ReasoningItem):
            text = "".join(p.text for p in item.content or ()) or "".join(p.text for p in item.summary)
            if text:
                # Reasoning opens an assistant turn; what follows it (text, calls) joins that turn.
                self._assistant(ThinkingPart(text), join=False)
            return
        if isinstance(item, w.MessageItem):
            role = item.role
            if role == "assistant":
                last = self.messages[-1] if self.messages else None
                thinking_only = last is not None and all(isinstance(p, ThinkingPart) for p in last.parts)
                parts = _joined(_text_parts(item.content, f"{at}.content", images=False))
                self._assistant(*parts, join=thinking_only and last is not None and last.role == "assistant")
            elif role == "user":
                self.messages.append(Message("user", _text_parts(item.content, f"{at}.content", images=True)))
            else:  # system, developer
                parts = _joined(_text_parts(item.content, f"{at}.content", images=False))
                self.messages.append(Message("system", parts or (TextPart(""),)))
            return
        raise _unsupported("Input items", item.type, f"{at}.type")

    def finish(self) -> tuple[Message, ...]:
        self._check_answered()
        return tuple(self.messages)


def _joined_text(parts: Sequence[Any], param: str) -> str:
    return "".join(p.text for p in _text_parts(parts, param, images=False) if isinstance(p, TextPart))


def input_items(req: w.CreateResponse) -> list[Any]:
    """The request's own input as items (a string is one user message)."""
    if req.input is None:
        return []
    if isinstance(req.input, str):
        return [w.MessageItem(role="user", content=req.input)]
    return list(req.input)


def messages(instructions: str | None, items: Sequence[Any]) -> tuple[Message, ...]:
    folder = _Folder()
    if instructions:
        folder.messages.append(Message("system", (TextPart(instructions),)))
    for index, item in enumerate(items):
        folder.add(index, item)
    return folder.finish()


# -- tools, formats, reasoning --------------------------------------------------------------


def _parameters(tool: w.FunctionTool, index: int) -> dict[str, Any]:
    return function_parameters(tool.name, tool.parameters, f"tools[{index}].parameters")


def _tools(req: w.CreateResponse) -> tuple[tuple[ToolSpec, ...], ToolChoice]:
    specs: list[ToolSpec] = []
    first: dict[str, int] = {}
    for i, tool in enumerate(req.tools or ()):
        if not isinstance(tool, w.FunctionTool):
            raise UnsupportedFeature(
                f"Tools of type `{tool.type}` are not supported by gatewright: it serves function tools "
                '(`type: "function"`) only.',
                param=f"tools[{i}].type",
                code="unsupported_tool_type",
            )
        if first.setdefault(tool.name, i) != i:
            raise InvalidRequest(
                f"Invalid 'tools[{i}].name': the function name '{tool.name}' is already used by "
                f"'tools[{first[tool.name]}]'; function names must be unique.",
                param=f"tools[{i}].name",
            )
        specs.append(ToolSpec(tool.name, tool.description, _parameters(tool, i), bool(tool.strict)))
    tools = tuple(specs)
    choice = req.tool_choice
    if choice is None:
        return tools, TOOL_CHOICE_AUTO if tools else TOOL_CHOICE_NONE
    if isinstance(choice, w.FunctionChoice):
        if choice.name not in first:
            raise InvalidRequest(
                f"Invalid 'tool_choice.name': function '{choice.name}' is not in 'tools'.", param="tool_choice.name"
            )
        return tools, ToolChoice("named", choice.name)
    if isinstance(choice, w.Unsupported):
        raise UnsupportedFeature(
            f"Invalid 'tool_choice': type `{choice.type}` is not supported by gatewright; use 'none', 'auto', "
            '\'required\' or {"type": "function", "name": ...}.',
            param="tool_choice.type",
            code="unsupported_tool_choice",
        )
    if choice != "none" and not tools:
        raise InvalidRequest(f"Invalid 'tool_choice': '{choice}' needs 'tools' to be specified.", param="tool_choice")
    return tools, ToolChoice(choice)


def _format(req: w.CreateResponse) -> ResponseFormat:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or isinstance(fmt, w.TextFormat):
        return TEXT_FORMAT
    if isinstance(fmt, w.JsonObjectFormat):
        return ResponseFormat("json_object")
    return ResponseFormat("json_schema", fmt.schema_, fmt.name, bool(fmt.strict))


def _reasoning(req: w.CreateResponse) -> Reasoning | None:
    effort = req.reasoning.effort if req.reasoning is not None else None
    # A hint, as OpenAI's own non-reasoning models treat it: ignored (and said so in a header) by a
    # model that cannot reason, so agents that always send it work with every model.
    return Reasoning(EFFORT[effort]) if effort is not None else None


def to_core(req: w.CreateResponse, items: Sequence[Any]) -> CoreRequest:
    """The neutral request for ``req`` whose whole conversation (stored prefix included) is ``items``."""
    check_refused(req)
    if not items:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    tools, tool_choice = _tools(req)
    logprobs = LOGPROBS in (req.include or ()) or bool(req.top_logprobs)
    return CoreRequest(
        model=req.model,
        messages=messages(req.instructions, items),
        sampling=Sampling(temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_output_tokens),
        logprobs=logprobs,
        top_logprobs=req.top_logprobs or 0,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        response_format=_format(req),
        reasoning=_reasoning(req),
        stream=bool(req.stream),
        user=req.user or req.safety_identifier,
    )


# -- items as stored and listed -------------------------------------------------------------


def resource(item: Any) -> dict[str, Any]:
    """An input item in the shape OpenAI lists it (an id, a status, content as a list of parts)."""
    data: dict[str, Any] = item.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["id"] = data.get("id") or item_id(item.type)
    if isinstance(item, w.MessageItem):
        if isinstance(item.content, str):
            part = "output_text" if item.role == "assistant" else "input_text"
            data["content"] = [{"type": part, "text": item.content}]
        if item.role == "assistant":
            for part in data["content"]:
                if part["type"] == "output_text":
                    part.setdefault("annotations", [])
                    part.setdefault("logprobs", [])
    if item.type != "reasoning" or "status" in data:
        data.setdefault("status", "completed")
    return data


def tools_echo(req: w.CreateResponse) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters,
            "strict": t.strict,
        }
        for t in req.tools or ()
        if isinstance(t, w.FunctionTool)
    ]


def tool_choice_echo(req: w.CreateResponse) -> Any:
    choice = req.tool_choice
    if choice is None:
        return "auto"
    if isinstance(choice, w.FunctionChoice):
        return {"type": "function", "name": choice.name}
    return choice


def text_echo(req: w.CreateResponse) -> dict[str, Any]:
    fmt = req.text.format if req.text is not None else None
    body: dict[str, Any] = {"format": {"type": "text"}, "verbosity": "medium"}
    if isinstance(fmt, w.JsonObjectFormat):
        body["format"] = {"type": "json_object"}
    elif isinstance(fmt, w.JsonSchemaFormat):
        body["format"] = {
            "type": "json_schema",
            "name": fmt.name,
            "schema": fmt.schema_,
            "description": fmt.description,
            "strict": fmt.strict,
        }
    return body
