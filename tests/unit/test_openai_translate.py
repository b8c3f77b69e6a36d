from __future__ import annotations

from typing import Any

import pytest

from gatewright.api.openai.schemas import ChatCompletionRequest
from gatewright.api.openai.translate import to_core
from gatewright.core.errors import InvalidRequest
from gatewright.core.types import Reasoning, TextPart, ToolCallPart, ToolResultPart


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
