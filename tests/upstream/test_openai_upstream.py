"""The OpenAI-compatible upstream backend, in process, against recorded ``llama_cpp.server``
answers served over loopback HTTP: request building, re-framing, usage, error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gatewright.backends.openai_compat import OpenAICompatBackend, wire_request
from gatewright.backends.options import OpenAIOptions
from gatewright.backends.upstream import close_clients, retry_after, status_error
from gatewright.backends.usage import openai_usage
from gatewright.core.backend import CallContext
from gatewright.core.catalog import parse_catalog
from gatewright.core.errors import ContextWindowExceeded, InvalidRequest, UpstreamError, UpstreamUnavailable
from gatewright.core.events import ChoiceEnd, Event, TextDelta, ToolCallDelta, ToolCallStart, UsageReport
from gatewright.core.types import (
    CacheMark,
    CoreRequest,
    Message,
    Reasoning,
    Sampling,
    TextPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    ToolSpec,
    Usage,
)
from tests.support.faulty_upstream import Answer, FaultyUpstream, Raw, sse

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "llama_cpp_server"
WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
ASK_WEATHER = (Message("user", (TextPart("What is the weather in Paris?"),)),)


@pytest.fixture(scope="module", autouse=True)
async def pooled_clients() -> AsyncIterator[None]:
    yield
    await close_clients()


def backend_for(url: str, **options: Any) -> OpenAICompatBackend:
    entry = {"id": "m", "context_window": 2048, "max_output": 128, "backend": "openai", "base_url": url, **options}
    catalog = parse_catalog({"models": [entry]})
    model = catalog.entries[0]
    return OpenAICompatBackend(model.deployments[0], model)


async def run(backend: OpenAICompatBackend, request: CoreRequest) -> tuple[list[Event], CallContext]:
    ctx = CallContext("req_test")
    return [event async for event in backend.stream(request, ctx)], ctx


def tool_request(stream: bool) -> CoreRequest:
    return CoreRequest(
        model="m",
        messages=ASK_WEATHER,
        sampling=Sampling(max_tokens=40),
        tools=(WEATHER,),
        tool_choice=ToolChoice("named", "get_weather"),
        stream=stream,
    )


async def test_streamed_tool_call_repeating_id_and_name_is_reframed(faulty: FaultyUpstream) -> None:
    # Cut into uneven pieces so SSE lines arrive split across reads.
    faulty.script("rec-tool-stream", sse((RECORDED / "tool_call.stream.sse").read_bytes(), pieces=9))
    events, ctx = await run(backend_for(faulty.base_url("rec-tool-stream")), tool_request(stream=True))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert len(starts) == 1
    assert starts[0].name == "get_weather" and starts[0].index == 0
    assert starts[0].id.startswith("call__0_get_weather_cmpl-") and len(starts[0].id) < 80
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert orjson.loads(arguments) == {"city": "Paris"}
    assert [e for e in events if isinstance(e, ChoiceEnd)] == [ChoiceEnd(0, "tool_calls")]
    report = events[-1]
    assert isinstance(report, UsageReport)
    # llama_cpp.server sends no usage chunk although it was asked: estimated, and marked so.
    assert report.usage.estimated and report.usage.output_tokens >= 6 and report.usage.input_tokens > 0
    assert ctx.usage is report.usage
    sent = faulty.seen("rec-tool-stream")[-1].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_non_streaming_request_is_the_upstreams_whole_answer(faulty: FaultyUpstream) -> None:
    faulty.script("rec-whole", Raw((RECORDED / "tool_call.response.json").read_bytes()))
    events, ctx = await run(backend_for(faulty.base_url("rec-whole")), tool_request(stream=False))
    start, delta, end, report = events
    assert isinstance(start, ToolCallStart) and (start.name, start.index) == ("get_weather", 0)
    assert start.id == "call__0_get_weather_cmpl-1e902aa3-6809-45ca-a534-896f0dd7c693"
    assert isinstance(delta, ToolCallDelta) and orjson.loads(delta.arguments) == {"city": "Paris"}
    assert end == ChoiceEnd(0, "tool_calls")
    # A whole answer carries the server's own counts (its stream does not).
    assert isinstance(report, UsageReport) and report.usage == Usage(169, 6) and ctx.usage is report.usage
    sent = faulty.seen("rec-whole")[-1].body
    assert sent["stream"] is False and "stream_options" not in sent


async def test_an_upstream_that_streams_to_a_waiting_caller_is_read_as_its_stream(faulty: FaultyUpstream) -> None:
    faulty.script("rec-tool", sse((RECORDED / "tool_call.stream.sse").read_bytes(), pieces=13))
    events, _ = await run(backend_for(faulty.base_url("rec-tool")), tool_request(stream=False))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "ToolCallStart" and kinds[-2:] == ["ChoiceEnd", "UsageReport"]
    arguments = "".join(e.arguments for e in events if isinstance(e, ToolCallDelta))
    assert orjson.loads(arguments) == {"city": "Paris"}
    assert faulty.seen("rec-tool")[-1].body["stream"] is False


@pytest.mark.parametrize(
    "body", [b"<html>502 Bad Gateway</html>", b"[]", b'{"object": "list", "data": []}', b'{"choices": [']
)
async def test_a_whole_answer_that_is_not_a_completion_is_an_upstream_error(
    faulty: FaultyUpstream, body: bytes
) -> None:
    faulty.script("not-chat", Raw(body))
    with pytest.raises(UpstreamError, match="not a chat completion") as caught:
        await run(backend_for(faulty.base_url("not-chat")), tool_request(stream=False))
    assert caught.value.status == 502


async def test_a_whole_answer_with_an_error_object_is_an_upstream_error(faulty: FaultyUpstream) -> None:
    faulty.script("whole-error", Raw(b'{"error": {"message": "the model crashed", "code": "engine_error"}}'))
    with pytest.raises(UpstreamError, match="the model crashed") as caught:
        await run(backend_for(faulty.base_url("whole-error")), tool_request(stream=False))
    assert caught.value.code == "engine_error"


async def test_recorded_text_stream_keeps_every_piece(faulty: FaultyUpstream) -> None:
    raw = (RECORDED / "text.stream.sse").read_bytes()
    faulty.script("rec-text", sse(raw, 5))
    request = CoreRequest(model="m", messages=ASK_WEATHER, sampling=Sampling(max_tokens=8), stream=True)
    events, _ = await run(backend_for(faulty.base_url("rec-text")), request)
    expected = "".join(
        chunk["choices"][0]["delta"].get("content") or ""
        for line in raw.decode().splitlines()
        if line.startswith("data: {") and (chunk := orjson.loads(line[6:]))["choices"]
    )
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == expected
    assert isinstance(events[-2], ChoiceEnd)


async def test_stream_cut_before_it_finished_is_an_error(faulty: FaultyUpstream) -> None:
    body = b'data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
    faulty.script("truncated", sse(body))
    request = CoreRequest(model="m", messages=ASK_WEATHER, stream=True)
    with pytest.raises(UpstreamError, match="before the answer finished"):
        await run(backend_for(faulty.base_url("truncated")), request)


async def test_parallel_calls_get_dense_indices_per_choice(faulty: FaultyUpstream) -> None:
    def chunk(choice: int, calls: list[dict[str, Any]], finish: str | None = None) -> bytes:
        payload = {"choices": [{"index": choice, "delta": {"tool_calls": calls}, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    call = {"type": "function", "function": {"name": "get_weather", "arguments": ""}}
    body = b"".join(
        [
            chunk(0, [{"index": 3, "id": "call_a", **call}]),
            chunk(1, [{"index": 0, "id": "call_c", **call}]),
            chunk(0, [{"index": 5, "id": "call_b", **call}]),
            chunk(0, [{"index": 3, "function": {"arguments": '{"city":"A"}'}}]),
            chunk(0, [{"index": 5, "function": {"arguments": '{"city":"B"}'}}], "tool_calls"),
            chunk(1, [{"index": 0, "function": {"arguments": "{}"}}], "tool_calls"),
            b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":21,"total_tokens":30}}\n\n',
            b"data: [DONE]\n\n",
        ]
    )
    faulty.script("parallel", sse(body))
    events, _ = await run(backend_for(faulty.base_url("parallel")), tool_request(stream=True))
    starts = [(e.choice, e.index, e.id) for e in events if isinstance(e, ToolCallStart)]
    assert starts == [(0, 0, "call_a"), (1, 0, "call_c"), (0, 1, "call_b")]
    deltas = [(e.choice, e.index, e.arguments) for e in events if isinstance(e, ToolCallDelta)]
    assert deltas == [(0, 0, '{"city":"A"}'), (0, 1, '{"city":"B"}'), (1, 0, "{}")]
    report = events[-1]
    assert isinstance(report, UsageReport) and not report.usage.estimated
    assert (report.usage.input_tokens, report.usage.output_tokens) == (9, 21)


async def test_reasoning_content_passes_through(faulty: FaultyUpstream) -> None:
    faulty.script("reasoner", Answer("42", reasoning="six times seven", prompt_tokens=4))
    request = CoreRequest(model="m", messages=ASK_WEATHER, reasoning=Reasoning("high"))
    events, _ = await run(backend_for(faulty.base_url("reasoner")), request)
    assert [type(e).__name__ for e in events[:2]] == ["ReasoningDelta", "TextDelta"]
    assert faulty.seen("reasoner")[-1].body["reasoning_effort"] == "high"


async def test_connection_refused_is_unavailable() -> None:
    from tests.support.procs import free_port

    backend = backend_for(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(UpstreamUnavailable) as caught:
        await run(backend, CoreRequest(model="m", messages=ASK_WEATHER))
    assert caught.value.upstream_status == 503


def test_wire_request_maps_history_tools_and_options() -> None:
    history = (
        Message("system", (TextPart("Be brief."),)),
        *ASK_WEATHER,
        Message("assistant", (ToolCallPart("call_1", "get_weather", '{"city":"Paris"}'),)),
        Message("tool", (ToolResultPart("call_1", "sunny"),)),
    )
    request = CoreRequest(
        model="m",
        messages=history,
        sampling=Sampling(temperature=0.2, seed=3, max_tokens=9, stop=("END",)),
        tools=(WEATHER,),
        tool_choice=ToolChoice("auto"),
        parallel_tool_calls=False,
    )
    body = wire_request(request, "upstream-name")
    assert body["model"] == "upstream-name"
    assert body["messages"][2] == {
        "role": "assistant",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert (body["temperature"], body["seed"], body["max_tokens"], body["stop"]) == (0.2, 3, 9, ["END"])
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is False
    assert body["stream"] is False and "stream_options" not in body  # a caller who waits: a whole answer


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("reasoning_effort", {"reasoning_effort": "low"}),
        ("thinking", {"thinking": {"type": "enabled"}}),
        ("chat_template_kwargs", {"chat_template_kwargs": {"enable_thinking": True}}),
    ],
)
def test_reasoning_styles_are_a_table(style: str, expected: dict[str, Any]) -> None:
    options = OpenAIOptions(reasoning_style=style)  # type: ignore[arg-type]
    body = wire_request(CoreRequest(model="m", messages=ASK_WEATHER, reasoning=Reasoning("low")), "u", options)
    assert {k: body[k] for k in expected} == expected


def test_upstream_errors_keep_message_param_and_code() -> None:
    deployment = backend_for("http://127.0.0.1:9/v1").deployment
    body = orjson.dumps(
        {"error": {"message": "maximum context length is 2048", "param": "messages", "code": "context_length_exceeded"}}
    )
    error = status_error(deployment, 400, httpx.Headers(), body)
    assert isinstance(error, ContextWindowExceeded)
    assert "maximum context length is 2048" in error.message and error.param == "messages"
    plain = status_error(deployment, 422, httpx.Headers(), b"not json at all")
    assert isinstance(plain, InvalidRequest) and "not json at all" in plain.message
    limited = status_error(deployment, 429, httpx.Headers({"retry-after": "7"}), b"{}")
    assert isinstance(limited, UpstreamError) and limited.status == 429 and limited.retry_after == 7
    broken = status_error(deployment, 401, httpx.Headers(), b'{"detail": "Invalid API key"}')
    assert isinstance(broken, UpstreamError) and broken.status == 502 and broken.upstream_status == 401
    assert "Invalid API key" in broken.message


def test_retry_after_forms() -> None:
    assert retry_after(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert retry_after(httpx.Headers({"retry-after": "3"})) == 3
    assert retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0  # in the past
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after(httpx.Headers()) is None


def test_cache_breakpoints_are_forwarded_only_where_the_deployment_says_so() -> None:
    marked = (
        Message("system", (TextPart("A long manual.", CacheMark()), TextPart("Notes."))),
        Message("user", (TextPart("Hi", CacheMark("1h")),)),
    )
    tool = ToolSpec("get_weather", None, WEATHER.parameters, cache=CacheMark())
    request = CoreRequest(model="m", messages=marked, tools=(tool,), tool_choice=ToolChoice("auto"))
    plain = wire_request(request, "u")
    assert plain["messages"][0] == {"role": "system", "content": "A long manual.Notes."}
    assert "cache_control" not in plain["tools"][0]
    forwarded = wire_request(request, "u", OpenAIOptions(cache_control=True))
    assert forwarded["messages"][0]["content"] == [
        {"type": "text", "text": "A long manual.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Notes."},
    ]
    assert forwarded["messages"][1]["content"] == [
        {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    assert forwarded["tools"][0]["cache_control"] == {"type": "ephemeral"}


@pytest.mark.parametrize(
    ("reported", "cached", "written"),
    [
        ({"prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30}}, 60, 30),  # OpenRouter
        ({"prompt_cache_hit_tokens": 60, "prompt_cache_miss_tokens": 40}, 60, 0),  # DeepSeek
        ({"cache_read_input_tokens": 60, "cache_creation_input_tokens": 30}, 60, 30),  # LiteLLM, Anthropic names
    ],
)
def test_cache_counts_in_every_spelling(reported: dict[str, Any], cached: int, written: int) -> None:
    usage = openai_usage({"prompt_tokens": 100, "completion_tokens": 5, **reported})
    assert usage == Usage(input_tokens=100, output_tokens=5, cached_tokens=cached, cache_write_tokens=written)
