from __future__ import annotations

from typing import Any

import pytest

from gatewright.api.openai.schemas import ChatCompletionRequest
from gatewright.api.openai.translate import to_core
from gatewright.core.errors import InvalidRequest, UnsupportedFeature
from gatewright.core.types import CacheMark, Reasoning, TextPart, ToolCallPart, ToolChoice, ToolResultPart


def core(**body: Any) -> Any:
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return to_core(ChatCompletionRequest.model_validate(body))


def test_sampling_and_limits() -> None:
    request = core(temperature=0.5, top_p=0.9, seed=3, stop="x", max_tokens=7, n=2, presence_penalty=1)
    s = request.sampling
    assert (s.temperature, s.top_p, s.seed, s.stop, s.max_tokens, s.presence_penalty) == (0.5, 0.9, 3, ("x",), 7, 1)
    assert request.n == 2
    assert core(max_tokens=7, max_completion_tokens=3).sampling.max_tokens == 3


def test_developer_becomes_system_and_tool_results_link_to_calls() -> None:
    request = core(
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
        ]
    )
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "tool"]
    assert request.messages[1].parts == (TextPart("a"), TextPart("b"))
    assert request.messages[2].parts == (ToolCallPart("c1", "f", "{}"),)
    assert request.messages[3].parts == (ToolResultPart("c1", "done"),)


def test_tool_message_without_call_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as raised:
        core(messages=[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "zz", "content": "r"}])
    assert raised.value.param == "messages[1].tool_call_id"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"reasoning_effort": "high"}, Reasoning("high")),
        ({"reasoning_effort": "minimal"}, Reasoning("low")),
        ({"reasoning_effort": "none"}, Reasoning("none")),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, Reasoning("medium", 1024, required=True)),
        ({"thinking": {"type": "disabled"}}, Reasoning("none")),
        ({"reasoning": {"effort": "low", "max_tokens": 200}}, Reasoning("low", 200)),
        ({"enable_thinking": True, "thinking_budget": 64}, Reasoning("medium", 64)),
        ({"enable_thinking": False}, Reasoning("none")),
        ({}, None),
    ],
)
def test_reasoning_switches_map_to_one_setting(body: dict[str, Any], expected: Reasoning | None) -> None:
    assert core(**body).reasoning == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logit_bias", {"50256": -100}),
        ("modalities", ["text", "audio"]),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("web_search_options", {}),
        ("verbosity", "low"),
        ("moderation", {"model": "omni-moderation-latest"}),
        ("functions", [{"name": "f", "parameters": {}}]),
        ("function_call", "auto"),
    ],
)
def test_fields_that_would_change_the_answer_are_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(UnsupportedFeature) as raised:
        core(**{field: value})
    assert raised.value.param == field and raised.value.status == 400 and field in raised.value.message


def test_harmless_values_and_metadata_fields_pass() -> None:
    request = core(
        logit_bias={},
        modalities=["text"],
        verbosity="medium",
        metadata={"trace": "abc"},
        store=True,
        service_tier="flex",
        safety_identifier="u-1",
        prompt_cache_key="k",
        prompt_cache_retention="24h",
        prediction={"type": "content", "content": "x"},
        user="u-1",
    )
    assert request.user == "u-1"


WEATHER_TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
TIME_TOOL = {"type": "function", "function": {"name": "time", "parameters": {"type": "object"}}}


def test_allowed_tools_narrow_the_tools_and_custom_tools_are_refused() -> None:
    allowed = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [TIME_TOOL]}}
    request = core(tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=allowed)
    assert [t.name for t in request.tools] == ["time"] and request.tool_choice == ToolChoice("required")
    unknown = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function"}]}}
    with pytest.raises(InvalidRequest) as raised:
        core(tools=[WEATHER_TOOL], tool_choice=unknown)
    assert raised.value.param == "tool_choice.allowed_tools.tools[0]"
    with pytest.raises(UnsupportedFeature) as refused:
        core(tools=[WEATHER_TOOL], tool_choice={"type": "custom", "custom": {"name": "weather"}})
    assert refused.value.param == "tool_choice.type"


def test_framework_shapes_system_and_tool_parts_and_empty_assistant_content() -> None:
    request = core(
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny"}]},
        ],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "weather"}},
        parallel_tool_calls=False,
        stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
    )
    assert request.messages[0].parts == (TextPart("Be brief."),)
    assert request.messages[2].parts == (ToolCallPart("c1", "weather", "{}"),)  # "" is no text
    assert request.messages[3].parts == (ToolResultPart("c1", "sunny"),)
    assert request.tool_choice == ToolChoice("named", "weather") and request.parallel_tool_calls is False


def test_cache_control_on_parts_becomes_breakpoints() -> None:
    mark = {"type": "ephemeral"}
    request = core(
        messages=[
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "Manual.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {"type": "text", "text": "Notes."},
                ],
            },
            {"role": "user", "content": [{"type": "text", "text": "Q", "cache_control": mark}]},
        ]
    )
    assert request.messages[0].parts == (TextPart("Manual.", CacheMark("1h")), TextPart("Notes."))
    assert request.messages[0].text == "Manual.Notes."  # the same prompt as without the marks
    assert request.messages[1].parts == (TextPart("Q", CacheMark()),)
    assert request.cache_breakpoints == ((0, 0), (1, 0))
