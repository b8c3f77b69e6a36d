"""Task API ⇄ core: pure functions, no I/O.

A ``textInference`` task with ``numberResults = k`` becomes k core requests of one choice each,
result i seeded with ``seed + i`` (each result its own seed, as the reference says), so every result
is its own billed request with a request id derived from the taskUUID and the result index.
"""

from __future__ import annotations

from typing import Any

import orjson

from gatewright.api.tasks import schemas as w
from gatewright.api.tasks.errors import error_object, invalid
from gatewright.core.errors import UnsupportedFeature
from gatewright.core.jobs import Outcome
from gatewright.core.types import (
    TOOL_CHOICE_AUTO,
    TOOL_CHOICE_NONE,
    Choice,
    CoreRequest,
    Message,
    Part,
    Reasoning,
    Sampling,
    TextPart,
    ToolCall,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    Usage,
)

Item = dict[str, Any]  # one result as this dialect renders it

TASK_TYPE = "textInference"
SEED_SPACE = 2**63

# toolChoice.type → the neutral tool choice mode.
TOOL_CHOICE_MODES: dict[str, str] = {"auto": "auto", "any": "required", "tool": "named", "none": "none"}

# Built-in tools are run by a provider; none is configured for them here.
BUILT_IN_TOOLS = frozenset({"search", "codeInterpreter"})

EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def result_seeds(seed: int, count: int) -> tuple[int, ...]:
    return tuple((seed + i) % SEED_SPACE for i in range(count))


def _messages(task: w.TextInferenceTask) -> tuple[Message, ...]:
    out: list[Message] = []
    if task.settings.systemPrompt is not None:
        out.append(Message("system", (TextPart(task.settings.systemPrompt),)))
    known_calls: set[str] = set()
    for i, m in enumerate(task.messages):
        if isinstance(m, w.UserMessage):
            out.append(Message("user", (TextPart(m.content),)))
        elif isinstance(m, w.AssistantMessage):
            parts: list[Part] = [TextPart(m.content)] if m.content else []
            for call in m.tools or ():
                known_calls.add(call.id)
                parts.append(ToolCallPart(call.id, call.name, orjson.dumps(call.input).decode()))
            out.append(Message("assistant", tuple(parts)))
        else:
            if m.id not in known_calls:
                raise invalid(
                    "invalidMessageId",
                    f"Invalid 'messages[{i}].id': no earlier assistant message has a tool call with id '{m.id}'.",
                    f"messages[{i}].id",
                )
            out.append(Message("tool", (ToolResultPart(m.id, m.content),)))
    return tuple(out)


def _tools(task: w.TextInferenceTask) -> tuple[tuple[ToolSpec, ...], ToolChoice]:
    specs: list[ToolSpec] = []
    for i, tool in enumerate(task.tools or ()):
        if tool.type in BUILT_IN_TOOLS:
            raise UnsupportedFeature(
                f"The built-in tool `{tool.type}` is not available: no provider for it is configured on this "
                "gateway. Define a function tool instead.",
                param=f"tools[{i}].type",
                code="unsupportedTool",
            )
        if tool.name is None:
            raise invalid("missingToolName", f"Missing required parameter 'tools[{i}].name'.", f"tools[{i}].name")
        specs.append(ToolSpec(tool.name, tool.description, tool.schema_ if tool.schema_ is not None else EMPTY_SCHEMA))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise invalid("duplicateToolName", "Invalid 'tools': function names must be unique.", "tools")
    choice = task.toolChoice
    if choice is not None and choice.type == "tool" and choice.name not in names:
        raise invalid(
            "invalidToolChoiceName",
            f"Invalid 'toolChoice.name': '{choice.name}' is not the name of a function in 'tools'.",
            "toolChoice.name",
        )
    if not specs:  # toolChoice only takes effect when tools are defined (seed 002)
        return (), TOOL_CHOICE_NONE
    if choice is None:
        return tuple(specs), TOOL_CHOICE_AUTO
    mode = TOOL_CHOICE_MODES[choice.type]
    return tuple(specs), ToolChoice(mode, choice.name if mode == "named" else None)  # type: ignore[arg-type]


def to_core(task: w.TextInferenceTask, seed: int) -> tuple[CoreRequest, ...]:
    """One core request per result; raises ``InvalidRequest`` for what the schema cannot see."""
    messages = _messages(task)
    tools, tool_choice = _tools(task)
    s = task.settings
    reasoning = Reasoning(s.thinkingLevel) if s.thinkingLevel is not None else None
    return tuple(
        CoreRequest(
            model=task.model,
            messages=messages,
            sampling=Sampling(
                temperature=s.temperature,
                top_p=s.topP,
                top_k=s.topK,
                frequency_penalty=s.frequencyPenalty,
                presence_penalty=s.presencePenalty,
                seed=result_seed,
                max_tokens=s.maxTokens,
                stop=tuple(s.stopSequences or ()),
            ),
            tools=tools,
            tool_choice=tool_choice,
            reasoning=reasoning,
            stream=task.deliveryMethod == "stream",
        )
        for result_seed in result_seeds(seed, task.numberResults)
    )


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "promptTokens": usage.input_tokens,
        "completionTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens,
        "thinkingTokens": usage.reasoning_tokens,
    }


def tool_uses(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Tool calls as ``{id, name, input}``; arguments that are not a JSON object stay a string."""
    out = []
    for call in calls:
        try:
            parsed: Any = orjson.loads(call.arguments) if call.arguments else {}
        except orjson.JSONDecodeError:
            parsed = call.arguments
        out.append({"id": call.id, "name": call.name, "input": parsed})
    return out


def success_item(task: w.TextInferenceTask, index: int, seed: int | None, choice: Choice, outcome: Outcome) -> Item:
    item: Item = {
        "taskType": TASK_TYPE,
        "taskUUID": task.taskUUID,
        "status": "success",
        "resultIndex": index,
        "text": choice.text,
        "finishReason": choice.finish_reason or "stop",
        "seed": seed,
    }
    if choice.reasoning:
        item["reasoningContent"] = choice.reasoning
    if choice.tool_calls:
        item["tools"] = tool_uses(choice.tool_calls)
    if task.includeCost:
        item["cost"] = outcome.cost.usd if outcome.cost is not None else 0.0
    if task.includeUsage:
        item["usage"] = usage_dict(outcome.usage)
    return item


def result_item(task: w.TextInferenceTask, outcome: Outcome) -> Item:
    """The stored (and returned) form of one finished result."""
    if outcome.error is not None or outcome.choice is None:
        assert outcome.error is not None
        return {
            "taskType": TASK_TYPE,
            "taskUUID": task.taskUUID,
            "status": "error",
            "resultIndex": outcome.index,
            "error": error_object(outcome.error, TASK_TYPE, task.taskUUID, outcome.index),
        }
    return success_item(task, outcome.index, outcome.seed, outcome.choice, outcome)


def processing_item(task_uuid: str, index: int) -> Item:
    # No `text` key at all: the SDK takes any item with a text as finished.
    return {"taskType": TASK_TYPE, "taskUUID": task_uuid, "status": "processing", "resultIndex": index}


def ack_item(task_uuid: str) -> Item:
    return {"taskType": TASK_TYPE, "taskUUID": task_uuid}
