"""Pure translation of the task API: task objects → core requests, core events → result items,
core errors → error objects. No server, no model."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gatewright.api.tasks.codec import TaskApiCodec, fingerprint, render, spec_of
from gatewright.api.tasks.errors import code_for, error_object, wire_code
from gatewright.api.tasks.stream import event_frame, replay
from gatewright.core import errors as e
from gatewright.core.accumulate import Accumulator
from gatewright.core.events import ChoiceEnd, ReasoningDelta, TextDelta, ToolCallDelta, ToolCallStart, UsageReport
from gatewright.core.jobs import Outcome
from gatewright.core.types import Cost, Reasoning, TextPart, ToolCallPart, ToolChoice, ToolResultPart, Usage

UUID = "a770f077-f413-47de-9dac-be0b26a35da6"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get weather for a city.",
    "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def task(**fields: Any) -> dict[str, Any]:
    return {
        "taskType": "textInference",
        "taskUUID": UUID,
        "model": "zai:glm@5.1",
        "messages": [{"role": "user", "content": "Weather in Tokyo?"}],
        **fields,
    }


def test_every_setting_reaches_the_core_request() -> None:
    spec = spec_of(
        task(
            seed=42,
            numberResults=3,
            settings={
                "systemPrompt": "Be brief.",
                "temperature": 0.3,
                "topP": 0.9,
                "topK": 40,
                "frequencyPenalty": 0.5,
                "presencePenalty": -0.5,
                "maxTokens": 300,
                "stopSequences": ["\n\n", "END"],
                "thinkingLevel": "high",
            },
            deliveryMethod="stream",
        )
    )
    assert len(spec.requests) == 3 and spec.seeds == (42, 43, 44) and spec.delivery == "stream"
    for request, seed in zip(spec.requests, spec.seeds, strict=True):
        s = request.sampling
        assert (s.temperature, s.top_p, s.top_k, s.frequency_penalty, s.presence_penalty) == (0.3, 0.9, 40, 0.5, -0.5)
        assert (s.max_tokens, s.stop, s.seed) == (300, ("\n\n", "END"), seed)
        assert request.n == 1 and request.stream and request.model == "zai:glm@5.1"
        assert request.reasoning == Reasoning("high")
        assert [m.role for m in request.messages] == ["system", "user"]
        assert request.messages[0].text == "Be brief."


def test_seeds_wrap_inside_the_allowed_range() -> None:
    spec = spec_of(task(seed=2**63 - 1, numberResults=2))
    assert spec.seeds == (2**63 - 1, 0)


def test_missing_seed_is_drawn_once_and_stored() -> None:
    spec = spec_of(task(numberResults=2))
    seed = spec.stored["seed"]
    assert 0 <= seed < 2**32 and spec.seeds == (seed, seed + 1)
    again = TaskApiCodec().rebuild(spec.stored, spec.fingerprint)
    assert again.seeds == spec.seeds and again.requests == spec.requests and again.fingerprint == spec.fingerprint


def test_fingerprint_ignores_delivery_method_only() -> None:
    assert fingerprint(task(deliveryMethod="async")) == fingerprint(task(deliveryMethod="sync"))
    assert fingerprint(task(seed=1)) != fingerprint(task(seed=2))


def test_tool_conversation_and_tool_choice() -> None:
    spec = spec_of(
        task(
            messages=[
                {"role": "user", "content": "Weather in Tokyo?"},
                {"role": "assistant", "tools": [{"id": "c1", "name": "get_weather", "input": {"city": "Tokyo"}}]},
                {"role": "tool", "id": "c1", "content": "22°C, partly cloudy."},
            ],
            tools=[WEATHER],
            toolChoice={"type": "tool", "name": "get_weather"},
        )
    )
    request = spec.requests[0]
    assert request.tools[0].name == "get_weather" and request.tools[0].parameters == WEATHER["schema"]
    assert request.tool_choice == ToolChoice("named", "get_weather")
    assistant, tool = request.messages[1], request.messages[2]
    assert assistant.parts == (ToolCallPart("c1", "get_weather", '{"city":"Tokyo"}'),)
    assert tool.parts == (ToolResultPart("c1", "22°C, partly cloudy."),)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, ToolChoice("auto")),
        ({"type": "any"}, ToolChoice("required")),
        ({"type": "none"}, ToolChoice("none")),
    ],
)
def test_tool_choice_modes(choice: dict[str, str], expected: ToolChoice) -> None:
    assert spec_of(task(tools=[WEATHER], toolChoice=choice)).requests[0].tool_choice == expected


def test_tool_choice_without_tools_takes_no_effect() -> None:
    request = spec_of(task(toolChoice={"type": "any"})).requests[0]
    assert request.tools == () and request.tool_choice == ToolChoice("none")


def test_assistant_text_is_kept_next_to_its_tool_calls() -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Let me look.", "tools": [{"id": "x", "name": "get_weather", "input": {}}]},
    ]
    parts = spec_of(task(messages=messages, tools=[WEATHER])).requests[0].messages[1].parts
    assert parts == (TextPart("Let me look."), ToolCallPart("x", "get_weather", "{}"))


def fold(events: list[Any], index: int = 0, seed: int = 7) -> Outcome:
    """The frames a streamed result sends, and the outcome its job stores."""
    frames = [event_frame(UUID, index, event) for event in events]
    assert all(f is None or f.startswith(b"data: ") for f in frames)
    acc = Accumulator(1)
    for event in events:
        acc.add(event)
    return Outcome(index, seed, acc.finish()[0], acc.usage, acc.cost)


def test_tool_calls_come_back_as_id_name_input() -> None:
    usage = Usage(input_tokens=20, output_tokens=9)
    outcome = fold(
        [
            ToolCallStart(0, 0, "call_1", "get_weather"),
            ToolCallDelta(0, 0, '{"ci'),
            ToolCallDelta(0, 0, 'ty": "Tokyo"}'),
            ToolCallStart(0, 1, "call_2", "get_weather"),
            ToolCallDelta(0, 1, '{"city": "Paris"}'),
            ChoiceEnd(0, "tool_calls"),
            UsageReport(usage, Cost(100, 0.00005)),
        ]
    )
    spec = spec_of(task(tools=[WEATHER], includeCost=True, includeUsage=True, seed=7))
    item = render(spec, outcome)
    assert item == {
        "taskType": "textInference",
        "taskUUID": UUID,
        "status": "success",
        "resultIndex": 0,
        "text": "",
        "finishReason": "tool_calls",
        "seed": 7,
        "tools": [
            {"id": "call_1", "name": "get_weather", "input": {"city": "Tokyo"}},
            {"id": "call_2", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "cost": 0.00005,
        "usage": {"promptTokens": 20, "completionTokens": 9, "totalTokens": 29, "thinkingTokens": 0},
    }


def test_tool_arguments_that_are_not_json_stay_text() -> None:
    outcome = fold([ToolCallStart(0, 0, "c", "f"), ToolCallDelta(0, 0, "{broken"), ChoiceEnd(0, "tool_calls")])
    item = render(spec_of(task(tools=[WEATHER])), outcome)
    assert item["tools"] == [{"id": "c", "name": "f", "input": "{broken"}]


def test_reasoning_text_and_flags_off() -> None:
    outcome = fold(
        [
            ReasoningDelta(0, "Think."),
            TextDelta(0, "Hi"),
            TextDelta(0, "!"),
            ChoiceEnd(0, "stop"),
            UsageReport(Usage(input_tokens=3, output_tokens=4, reasoning_tokens=2)),
        ]
    )
    item = render(spec_of(task()), outcome)
    assert item["text"] == "Hi!" and item["reasoningContent"] == "Think." and item["finishReason"] == "stop"
    assert "cost" not in item and "usage" not in item and "tools" not in item


def test_stream_frames_and_replay() -> None:
    events = (ReasoningDelta(0, "r"), TextDelta(0, "t"), ChoiceEnd(0, "length"))
    frames = [event_frame(UUID, 2, ev) for ev in events]
    assert orjson.loads(frames[0][6:]) == {
        "taskType": "textInference",
        "taskUUID": UUID,
        "resultIndex": 2,
        "delta": {"reasoningContent": "r"},
    }
    assert orjson.loads(frames[1][6:])["delta"] == {"text": "t"} and frames[2] is None
    item = render(spec_of(task(includeUsage=True)), fold(list(events), index=2, seed=1))
    replayed = [orjson.loads(f[6:]) for f in replay([item])]
    assert [f["delta"] for f in replayed] == [{"reasoningContent": "r"}, {"text": "t"}, {}]
    assert replayed[-1]["finishReason"] == "length" and "usage" in replayed[-1] and "cost" not in replayed[-1]


def test_error_outcome_is_an_error_item() -> None:
    error = e.InsufficientCredits("no money", code="insufficient_credits")
    item = render(spec_of(task()), Outcome(1, 5, error=error))
    assert item == {
        "taskType": "textInference",
        "taskUUID": UUID,
        "status": "error",
        "resultIndex": 1,
        "error": {
            "code": "insufficientCredits",
            "message": "no money",
            "parameter": None,
            "taskType": "textInference",
            "taskUUID": UUID,
            "resultIndex": 1,
        },
    }


@pytest.mark.parametrize(
    ("error", "code", "parameter"),
    [
        (e.Unauthorized("x", code="missing_api_key"), "missingApiKey", None),
        (e.Unauthorized("x", code="invalid_api_key"), "invalidApiKey", None),
        (e.PermissionDenied("x", code="key_disabled"), "apiKeyDisabled", None),
        (e.InsufficientCredits("x", code="key_limit_exceeded"), "keySpendQuotaExceeded", None),
        (e.ModelNotFound("x", param="model", code="model_not_found"), "unknownModel", "model"),
        (e.ModelInactive("x", param="model", code="model_inactive"), "unsupportedModel", "model"),
        (e.ContextWindowExceeded("x", param="max_tokens"), "invalidMaxTokens", "settings.maxTokens"),
        (e.ContextWindowExceeded("x", param="messages"), "invalidMessages", "messages"),
        (e.UnsupportedFeature("x", param="tools", code="tools_not_supported"), "unsupportedTools", "tools"),
        (e.UnsupportedFeature("x", param="thinking"), "unsupportedThinkingLevel", "settings.thinkingLevel"),
        (e.RateLimited("x", retry_after=1), "rateLimitExceeded", None),
        (e.Overloaded("x", code="engine_queue_full"), "serviceUnavailable", None),
        (e.UpstreamTimeout("x"), "timeoutProvider", None),
        (e.UpstreamUnavailable("x"), "noAvailableServer", None),
        (e.UpstreamError("x", upstream_status=500), "providerError", None),
        (e.InternalError("x"), "internalServerError", None),
    ],
)
def test_core_errors_map_to_sdk_code_families(error: e.GatewrightError, code: str, parameter: str | None) -> None:
    body = error_object(error, "textInference", UUID)
    assert (body["code"], body["parameter"]) == (code, parameter)
    assert wire_code(error) == code


def test_validation_codes_name_the_parameter() -> None:
    assert code_for("invalid", "settings.maxTokens") == "invalidMaxTokens"
    assert code_for("missing", "messages[2].content") == "missingMessageContent"
    assert code_for("invalid", "toolChoice.type") == "invalidToolChoiceType"
    assert code_for("invalid", None) == "invalidRequest"
