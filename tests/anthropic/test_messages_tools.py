"""Tool use through Messages on the real embedded model: forced tool use, streamed tool input
(input_json_delta, reassembled by the SDK) and a tool_result round trip.

The embedded engine answers 400 for tools until constrained tool calls land (issue 4). Until then
these tests are expected to fail with exactly that 400; `strict` turns them into failures the moment
the engine supports tools, so the mark cannot outlive its reason.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.conftest import MODEL

pytestmark = pytest.mark.xfail(
    raises=anthropic.BadRequestError,
    strict=True,
    reason="issue 4: the embedded engine does not run tool calls yet (answers 400 for tools)",
)

WEATHER: Any = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME: Any = {
    "name": "get_time",
    "description": "Current local time in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


def _tool_uses(message: anthropic.types.Message) -> list[anthropic.types.ToolUseBlock]:
    return [block for block in message.content if block.type == "tool_use"]


def test_forced_tool_use_with_any(messages: anthropic.Anthropic) -> None:
    message = messages.messages.create(
        model=MODEL, max_tokens=64, tools=[WEATHER], tool_choice={"type": "any"}, messages=ASK
    )
    assert message.stop_reason == "tool_use"
    calls = _tool_uses(message)
    assert calls and all(call.name == "get_weather" for call in calls)
    assert all(isinstance(call.input, dict) and isinstance(call.input.get("city"), str) for call in calls)
    assert all(call.id for call in calls)


def test_forced_named_tool(messages: anthropic.Anthropic) -> None:
    message = messages.messages.create(
        model=MODEL,
        max_tokens=64,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
        messages=ASK,
    )
    calls = _tool_uses(message)
    assert message.stop_reason == "tool_use"
    assert [call.name for call in calls] == ["get_time"]


def test_streamed_tool_input_is_reassembled_by_the_sdk(messages: anthropic.Anthropic) -> None:
    fragments: list[str] = []
    with messages.messages.stream(
        model=MODEL,
        max_tokens=64,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=ASK,
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                fragments.append(event.delta.partial_json)
        final = stream.get_final_message()
    calls = _tool_uses(final)
    assert final.stop_reason == "tool_use" and len(calls) == 1
    assert fragments and isinstance(calls[0].input, dict) and "city" in calls[0].input


@pytest.mark.parametrize("is_error", [False, True])
def test_tool_result_round_trip(messages: anthropic.Anthropic, is_error: bool) -> None:
    first = messages.messages.create(
        model=MODEL,
        max_tokens=64,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=ASK,
    )
    call = _tool_uses(first)[0]
    result = "Service unavailable." if is_error else "18 degrees and sunny."
    answer = messages.messages.create(
        model=MODEL,
        max_tokens=16,
        tools=[WEATHER],
        tool_choice={"type": "none"},
        messages=[
            *ASK,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result, "is_error": is_error}],
            },
        ],
    )
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [block.type for block in answer.content] == ["text"]
