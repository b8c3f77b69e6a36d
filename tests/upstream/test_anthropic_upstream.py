"""The Anthropic-style upstream backend, in process, against recorded Messages payloads served
over loopback HTTP: request translation (system, tools, thinking, stops), stream parsing, usage
conversion and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gatewright.backends.anthropic_upstream import AnthropicBackend, wire_request
from gatewright.backends.upstream import close_clients
from gatewright.core.backend import CallContext
from gatewright.core.catalog import parse_catalog
from gatewright.core.errors import InvalidRequest, UnsupportedFeature, UpstreamError
from gatewright.core.events import (
    ChoiceEnd,
    Event,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from gatewright.core.routing import is_retryable
from gatewright.core.types import (
    CacheMark,
    CoreRequest,
    ImagePart,
    Message,
    Reasoning,
    RedactedThinkingPart,
    ResponseFormat,
    Sampling,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    Usage,
)
from tests.support.faulty_upstream import Fail, FaultyUpstream, Raw, sse

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "anthropic_upstream"
HI = (Message("user", (TextPart("Hi"),)),)
WEATHER = ToolSpec("get_weather", "Weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}})


@pytest.fixture(scope="module", autouse=True)
async def pooled_clients() -> AsyncIterator[None]:
    yield
    await close_clients()


def backend_for(url: str, **options: Any) -> AnthropicBackend:
    entry = {
        "id": "claude",
        "context_window": 200000,
        "max_output": 4096,
        "backend": "anthropic",
        "base_url": url,
        "upstream_model": "claude-sonnet-4-5",
        **options,
    }
    model = parse_catalog({"models": [entry]}).entries[0]
    return AnthropicBackend(model.deployments[0], model)


async def run(backend: AnthropicBackend, request: CoreRequest) -> list[Event]:
    return [event async for event in backend.stream(request, CallContext("req_test"))]


def streamed(request: CoreRequest) -> CoreRequest:
    return CoreRequest(**{**{f: getattr(request, f) for f in request.__dataclass_fields__}, "stream": True})


async def test_recorded_text_stream(faulty: FaultyUpstream) -> None:
    faulty.script("a-basic", sse((RECORDED / "basic.stream.sse").read_bytes(), pieces=7))
    events = await run(backend_for(faulty.base_url("a-basic")), streamed(CoreRequest(model="claude", messages=HI)))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello there!"
    assert events[-2:] == [ChoiceEnd(0, "stop"), UsageReport(Usage(input_tokens=11, output_tokens=6))]
    sent = faulty.seen("a-basic")[-1]
    assert sent.path.endswith("/v1/messages") and sent.body["stream"] is True
    assert sent.body["max_tokens"] == 4096 and sent.body["model"] == "claude-sonnet-4-5"


async def test_recorded_tool_use_stream_with_input_json_delta(faulty: FaultyUpstream) -> None:
    faulty.script("a-tool", sse((RECORDED / "tool_use.stream.sse").read_bytes(), pieces=11))
    request = CoreRequest(model="claude", messages=HI, tools=(WEATHER,), tool_choice=ToolChoice("auto"), stream=True)
    events = await run(backend_for(faulty.base_url("a-tool")), request)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == (
        "I'll check the current weather in Paris for you."
    )
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert starts == [ToolCallStart(0, 0, "toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather")]
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert orjson.loads(arguments) == {"location": "Paris"}
    assert [e for e in events if isinstance(e, ChoiceEnd)] == [ChoiceEnd(0, "tool_calls")]
    report = events[-1]
    assert isinstance(report, UsageReport)
    assert (report.usage.input_tokens, report.usage.output_tokens, report.usage.estimated) == (377, 65, False)


async def test_recorded_cache_usage_counts_the_whole_prompt(faulty: FaultyUpstream) -> None:
    faulty.script("a-cache", sse((RECORDED / "cache_usage.stream.sse").read_bytes()))
    events = await run(backend_for(faulty.base_url("a-cache")), streamed(CoreRequest(model="claude", messages=HI)))
    report = events[-1]
    assert isinstance(report, UsageReport)
    # message_delta's cumulative counts win: 40 uncached + 7 read + 12 written = 59 prompt tokens.
    assert report.usage == Usage(
        input_tokens=59, output_tokens=8, cached_tokens=7, cache_write_tokens=12, reasoning_tokens=3
    )


async def test_thinking_then_two_tool_calls_streamed(faulty: FaultyUpstream) -> None:
    faulty.script("a-think", sse((RECORDED / "thinking_tool.stream.sse").read_bytes(), pieces=13))
    request = CoreRequest(model="claude", messages=HI, tools=(WEATHER,), reasoning=Reasoning("medium"), stream=True)
    events = await run(backend_for(faulty.base_url("a-think")), request)
    kinds = [type(e).__name__ for e in events]
    assert kinds[:4] == ["ReasoningDelta", "ReasoningDelta", "ReasoningSignature", "TextDelta"]
    assert events[2] == ReasoningSignature(0, "EqQBCgIYAhIMsig")
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == (
        "The user wants the weather in Paris; I should call the tool."
    )
    starts = [(e.index, e.id, e.name) for e in events if isinstance(e, ToolCallStart)]
    assert starts == [(0, "toolu_01A", "get_weather"), (1, "toolu_01B", "get_time")]
    by_call = {k: "".join(e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == k) for k in (0, 1)}
    assert orjson.loads(by_call[0]) == {"city": "Paris"} and orjson.loads(by_call[1]) == {"zone": "CET"}
    report = events[-1]
    assert isinstance(report, UsageReport)
    assert (report.usage.input_tokens, report.usage.cached_tokens, report.usage.output_tokens) == (200, 80, 57)
    assert faulty.seen("a-think")[-1].body["thinking"] == {"type": "enabled", "budget_tokens": 4095}


async def test_non_streaming_request_is_the_stream_collected_with_signature_and_redacted_block(
    faulty: FaultyUpstream,
) -> None:
    faulty.script("a-whole", sse((RECORDED / "thinking_redacted.stream.sse").read_bytes(), pieces=5))
    events = await run(backend_for(faulty.base_url("a-whole")), CoreRequest(model="claude", messages=HI))
    assert faulty.seen("a-whole")[-1].body["stream"] is True  # one parser: upstreams always stream
    assert events[:5] == [
        ReasoningDelta(0, "The user wants the weather in Paris."),
        ReasoningSignature(0, "EqQBCgIYAhIMsig"),
        RedactedReasoning(0, "EmwKAhgBEgy3va3pzix"),
        TextDelta(0, "Let me check."),
        ToolCallStart(0, 0, "toolu_01A", "get_weather"),
    ]
    assert "".join(e.arguments for e in events if isinstance(e, ToolCallDelta)) == '{"city": "Paris"}'
    assert events[-2] == ChoiceEnd(0, "tool_calls")
    assert events[-1] == UsageReport(Usage(input_tokens=100, output_tokens=40, cached_tokens=50, cache_write_tokens=30))


async def test_error_event_mid_stream_is_an_upstream_error(faulty: FaultyUpstream) -> None:
    faulty.script("a-overloaded", sse((RECORDED / "overloaded_mid_stream.sse").read_bytes()))
    stream = backend_for(faulty.base_url("a-overloaded")).stream(
        streamed(CoreRequest(model="claude", messages=HI)), CallContext("req")
    )
    assert await anext(stream) == TextDelta(0, "Hel")
    with pytest.raises(UpstreamError, match="Overloaded") as caught:
        await anext(stream)
    assert caught.value.upstream_status == 529


async def test_stream_without_message_stop_is_an_error(faulty: FaultyUpstream) -> None:
    cut = (RECORDED / "basic.stream.sse").read_bytes().split(b"event: message_delta")[0]
    faulty.script("a-cut", sse(cut))
    with pytest.raises(UpstreamError, match="before message_stop"):
        await run(backend_for(faulty.base_url("a-cut")), streamed(CoreRequest(model="claude", messages=HI)))


async def test_http_errors_are_mapped_with_the_message(faulty: FaultyUpstream) -> None:
    backend = backend_for(faulty.base_url("a-errors"))
    faulty.script("a-errors", Fail(400, "messages: roles must alternate"), Fail(529, "Overloaded"))
    with pytest.raises(InvalidRequest, match="roles must alternate"):
        await run(backend, CoreRequest(model="claude", messages=HI))
    with pytest.raises(UpstreamError, match="Overloaded") as caught:
        await run(backend, CoreRequest(model="claude", messages=HI))
    assert is_retryable(caught.value)


def test_request_translation_of_a_tool_conversation() -> None:
    history = (
        Message("system", (TextPart("Be brief."),)),
        Message("user", (TextPart("Weather in Paris?"), ImagePart("data:image/png;base64,iVBORw0KGgo="))),
        Message(
            "assistant",
            (
                ThinkingPart("I should call the tool.", signature="sig-1"),
                RedactedThinkingPart("EmwKAhgBEgy3va3pzix"),
                ThinkingPart("unsigned, from another model"),
                ToolCallPart("toolu_1", "get_weather", '{"city": "Paris"}'),
            ),
        ),
        Message("tool", (ToolResultPart("toolu_1", "sunny, 21°C"),)),
        Message("tool", (ToolResultPart("toolu_2", "no data", is_error=True),)),
        Message("user", (TextPart("Thanks. Anything else?"),)),
    )
    request = CoreRequest(
        model="claude",
        messages=history,
        sampling=Sampling(temperature=0.5, top_k=20, max_tokens=2000, stop=("END",), seed=9),
        tools=(WEATHER,),
        tool_choice=ToolChoice("named", "get_weather"),
        parallel_tool_calls=False,
        reasoning=Reasoning("low"),
        user="user-42",
    )
    body = wire_request(request, "claude-sonnet-4-5", 4096)
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",  # tool results and the next user turn merge into one user turn
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 21°C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no data", "is_error": True},
                {"type": "text", "text": "Thanks. Anything else?"},
            ],
        },
    ]
    tool = {"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER.parameters}
    assert body["tools"] == [tool]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert (body["temperature"], body["top_k"], body["max_tokens"], body["stop_sequences"]) == (0.5, 20, 2000, ["END"])
    assert body["metadata"] == {"user_id": "user-42"} and "seed" not in body and body["stream"] is True


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
def test_tool_choice_table(mode: str, expected: dict[str, str]) -> None:
    request = CoreRequest(model="c", messages=HI, tools=(WEATHER,), tool_choice=ToolChoice(mode))  # type: ignore[arg-type]
    assert wire_request(request, "u", 100)["tool_choice"] == expected


def test_requests_the_messages_api_cannot_take_are_refused_clearly() -> None:
    with pytest.raises(UnsupportedFeature) as caught:
        wire_request(CoreRequest(model="c", messages=HI, n=2), "u", 100)
    assert caught.value.param == "n"
    with pytest.raises(UnsupportedFeature) as caught:
        wire_request(CoreRequest(model="c", messages=HI, response_format=ResponseFormat("json_object")), "u", 100)
    assert caught.value.param == "response_format"
    with pytest.raises(InvalidRequest) as caught:
        wire_request(
            CoreRequest(model="c", messages=HI, sampling=Sampling(max_tokens=500), reasoning=Reasoning("high")),
            "u",
            100,
        )
    assert caught.value.param == "max_tokens"
    bad_call = (Message("assistant", (ToolCallPart("t", "f", "[1, 2]"),)),)
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        wire_request(CoreRequest(model="c", messages=bad_call), "u", 100)
    disabled = wire_request(CoreRequest(model="c", messages=HI, reasoning=Reasoning("none")), "u", 100)
    assert disabled["thinking"] == {"type": "disabled"}


def test_auth_headers_follow_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_ANTHROPIC_TEST_KEY", "sk-ant-test")
    plain = backend_for("http://127.0.0.1:9/v1", api_key_env="GW_ANTHROPIC_TEST_KEY")
    assert plain.headers["x-api-key"] == "sk-ant-test" and plain.headers["anthropic-version"] == "2023-06-01"
    bearer = backend_for(
        "http://127.0.0.1:9/v1",
        api_key_env="GW_ANTHROPIC_TEST_KEY",
        options={"auth": "bearer", "anthropic_version": "2024-01-01"},
    )
    assert bearer.headers["authorization"] == "Bearer sk-ant-test" and "x-api-key" not in bearer.headers
    assert bearer.headers["anthropic-version"] == "2024-01-01"


def test_cache_breakpoints_are_forwarded_on_system_tools_and_blocks() -> None:
    marked = ToolSpec("get_weather", "Weather in a city", WEATHER.parameters, cache=CacheMark())
    history = (
        Message("system", (TextPart("A long manual.", CacheMark("1h")), TextPart("\nToday's notes."))),
        Message("user", (TextPart("Question one", CacheMark()), TextPart("and two"))),
        Message("assistant", (ToolCallPart("toolu_1", "get_weather", "{}"),)),
        Message("tool", (ToolResultPart("toolu_1", "sunny", cache=CacheMark("5m")),)),
    )
    body = wire_request(CoreRequest(model="c", messages=history, tools=(WEATHER, marked)), "u", 100)
    assert body["system"] == [
        {"type": "text", "text": "A long manual.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "\nToday's notes."},
    ]
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Question one", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "and two"},
    ]
    result = body["messages"][2]["content"][0]
    assert result["type"] == "tool_result" and result["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    # Without a breakpoint the system prompt stays a plain string.
    plain = wire_request(CoreRequest(model="c", messages=(Message("system", (TextPart("S"),)), *HI)), "u", 100)
    assert plain["system"] == "S"


async def test_count_tokens_asks_the_upstream_and_estimates_when_it_cannot(faulty: FaultyUpstream) -> None:
    backend = backend_for(faulty.base_url("a-count"))
    image = ImagePart("data:image/png;base64,iVBORw0KGgo=", "image/png")
    request = CoreRequest(
        model="claude",
        messages=(Message("user", (TextPart("What is in the picture?"), image)),),
        tools=(WEATHER,),
        tool_choice=ToolChoice("auto"),
    )
    faulty.script("a-count", Raw(b'{"input_tokens": 1742}'), Fail(404, "no such endpoint"))
    assert await backend.count_tokens(request) == 1742
    sent = faulty.seen("a-count")[-1]
    assert sent.path.endswith("/v1/messages/count_tokens")
    assert set(sent.body) == {"model", "messages", "tools", "tool_choice"}  # the prompt, no output settings
    assert sent.body["messages"][0]["content"][1]["type"] == "image"
    # A server without the endpoint: Anthropic's own rules, estimated here (an image of unknown size
    # ≈ 1398 tokens, the 346-token tool-use instructions for tool_choice auto, the tool itself).
    estimate = await backend.count_tokens(request)
    assert estimate == await backend.count_prompt_tokens(request)
    assert 1398 + 346 < estimate < 1398 + 346 + 100
    await close_clients()  # the pool was made on this test's loop: closed on it too
