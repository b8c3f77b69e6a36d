"""The request an agent framework built on the OpenAI SDK sends mid tool loop, with the fields the
SDK examples leave out: content-part arrays for system and tool messages, empty assistant content
beside tool calls, a ``tool_choice`` object, ``parallel_tool_calls``, ``stream_options``,
``metadata``, ``store``, ``service_tier`` and ``user``. Used against every backend."""

from __future__ import annotations

from typing import Any

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def agent_turn(model: str, *, stream: bool, max_tokens: int = 40) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "You are a weather assistant."},
                    {"type": "text", "text": " Be brief."},
                ],
            },
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny, 21 C"}]},
            {"role": "user", "content": "And in Rome?"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "metadata": {"session": "s-1"},
        "store": False,
        "service_tier": "auto",
        "user": "user-7",
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def forced_call_from_stream(chunks: list[Any]) -> dict[str, Any]:
    """The answer to ``agent_turn(stream=True)`` as the SDK's chunks carry it, checked for what the
    fields ask: one call of the named tool (no parallel calls), the usage chunk last."""
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None and usage.usage.prompt_tokens > 0
    calls: dict[int, dict[str, str]] = {}
    finishes = []
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"name": "", "arguments": ""})
                if call.function and call.function.name:
                    slot["name"] += call.function.name
                if call.function and call.function.arguments:
                    slot["arguments"] += call.function.arguments
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert finishes == ["tool_calls"] and list(calls) == [0], (finishes, calls)
    assert calls[0]["name"] == "get_weather"
    return calls[0]
