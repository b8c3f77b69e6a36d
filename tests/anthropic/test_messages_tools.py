"""Tool use through Messages on the real embedded model (constrained tool calls): forced tool use,
streamed tool input (input_json_delta, reassembled by the SDK) and a tool_result round trip.
Assertions are about the protocol: which blocks, which stop reason, input that fits the schema."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.conftest import MODEL

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
# Every test offers the same tools for the same question, so the engine reuses the cached prompt.
TOOLS = [WEATHER, TIME]
ONE_CALL: Any = {"disable_parallel_tool_use": True}


def _tool_uses(message: anthropic.types.Message) -> list[anthropic.types.ToolUseBlock]:
    return [block for block in message.content if block.type == "tool_use"]


def test_forced_tool_use_with_any(messages: anthropic.Anthropic) -> None:
    message = messages.messages.create(
        model=MODEL, max_tokens=48, tools=TOOLS, tool_choice={"type": "any", **ONE_CALL}, messages=ASK
    )
    assert message.stop_reason == "tool_use"
    [call] = _tool_uses(message)
    assert call.name in ("get_weather", "get_time") and call.id
    assert isinstance(call.input, dict) and isinstance(call.input.get("city"), str)  # the schema's required field


def test_forced_named_tool(messages: anthropic.Anthropic) -> None:
    message = messages.messages.create(
        model=MODEL,
        max_tokens=48,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_time", **ONE_CALL},
        messages=ASK,
    )
    assert message.stop_reason == "tool_use"
    assert [call.name for call in _tool_uses(message)] == ["get_time"]


def test_streamed_tool_input_is_reassembled_by_the_sdk(messages: anthropic.Anthropic) -> None:
    fragments: list[str] = []
    with messages.messages.stream(
        model=MODEL,
        max_tokens=48,
        tools=TOOLS,
        tool_choice={"type": "any", **ONE_CALL},
        messages=ASK,
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                fragments.append(event.delta.partial_json)
        final = stream.get_final_message()
    calls = _tool_uses(final)
    assert final.stop_reason == "tool_use" and len(calls) == 1
    assert fragments and isinstance(calls[0].input, dict) and "city" in calls[0].input


def test_tool_result_round_trip(messages: anthropic.Anthropic) -> None:
    # The earlier call is the client's to state; any tool_use the conversation holds may be answered.
    answer = messages.messages.create(
        model=MODEL,
        max_tokens=16,
        tools=TOOLS,
        messages=[
            *ASK,
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "Unavailable.", "is_error": True}
                ],
            },
        ],
    )
    # With tool_choice auto the model may answer or call again (cut short by max_tokens, perhaps);
    # the blocks must agree with the stop reason.
    kinds = [block.type for block in answer.content]
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use") and kinds
    if answer.stop_reason == "tool_use":
        assert kinds[-1] == "tool_use"
    if answer.stop_reason == "end_turn":
        assert "tool_use" not in kinds
    with pytest.raises(anthropic.BadRequestError) as raised:  # a result must answer a call the conversation made
        messages.messages.create(
            model=MODEL,
            max_tokens=16,
            tools=TOOLS,
            messages=[*ASK, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_02"}]}],
        )
    assert "toolu_02" in raised.value.message
