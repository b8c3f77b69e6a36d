"""Anthropic Messages ⇄ core translation: pure functions, no gateway."""

from __future__ import annotations

from typing import Any

import pytest

from gatewright.api.anthropic import schemas
from gatewright.api.anthropic.errors import error_body, lookup
from gatewright.api.anthropic.translate import count_request, from_core, stop_reason, to_core, usage_dict
from gatewright.api.http import parse
from gatewright.api.openai import schemas as openai_schemas
from gatewright.api.openai.translate import to_core as openai_to_core
from gatewright.core import errors as e
from gatewright.core.types import (
    CacheMark,
    Choice,
    CoreResponse,
    Cost,
    ImagePart,
    Message,
    Reasoning,
    RedactedThinkingPart,
    TextPart,
    ThinkingPart,
    ToolCall,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
)


def request(**fields: Any) -> schemas.MessagesRequest:
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}], **fields}
    return schemas.MessagesRequest.model_validate(body)


def invalid(body: dict[str, Any]) -> e.InvalidRequest:
    import orjson

    with pytest.raises(e.InvalidRequest) as raised:
        to_core(parse(schemas.MessagesRequest, orjson.dumps(body)))
    return raised.value


TOOL = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {}}}


def test_same_conversation_gives_the_same_neutral_request_as_chat_completions() -> None:
    sampling = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "seed": 1234, "max_tokens": 12, "stream": False}
    messages = to_core(
        request(
            system="You are terse.",
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
            ],
            stop_sequences=["\n\n"],
            **sampling,
        )
    )
    chat = openai_to_core(
        openai_schemas.ChatCompletionRequest.model_validate(
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
                ],
                "stop": ["\n\n"],
                **sampling,
            }
        )
    )
    assert messages == chat


def test_tool_results_become_tool_messages_in_block_order() -> None:
    core = to_core(
        request(
            tools=[TOOL],
            messages=[
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "content": [{"type": "text", "text": "no"}, {"type": "text", "text": "data"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "Summarise."},
                    ],
                },
            ],
        )
    )
    assert core.messages[1] == Message(
        "assistant",
        (
            ThinkingPart("Two calls.", "sig"),
            TextPart("Checking."),
            ToolCallPart("toolu_1", "get_weather", '{"city":"Paris"}'),
            ToolCallPart("toolu_2", "get_weather", '{"city":"Rome"}'),
        ),
    )
    assert core.messages[2:] == (
        Message("tool", (ToolResultPart("toolu_1", "sunny"),)),
        Message("tool", (ToolResultPart("toolu_2", "no\ndata", is_error=True),)),
        Message("user", (TextPart("Summarise."),)),
    )
    assert core.tool_choice == ToolChoice("auto") and core.parallel_tool_calls


def test_images_become_image_parts() -> None:
    core = to_core(
        request(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                    ],
                }
            ]
        )
    )
    assert core.messages[0].parts == (
        ImagePart("data:image/png;base64,iVBO", "image/png"),
        ImagePart("https://example.com/a.jpg"),
    )


@pytest.mark.parametrize(
    ("choice", "mode", "name", "parallel"),
    [
        ({"type": "auto"}, "auto", None, True),
        ({"type": "any"}, "required", None, True),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", None, False),
        ({"type": "tool", "name": "get_weather"}, "named", "get_weather", True),
        ({"type": "none"}, "none", None, True),
    ],
)
def test_tool_choice_table(choice: dict[str, Any], mode: str, name: str | None, parallel: bool) -> None:
    core = to_core(request(tools=[TOOL], tool_choice=choice))
    assert core.tool_choice == ToolChoice(mode, name)  # type: ignore[arg-type]
    assert core.parallel_tool_calls is parallel
    assert core.tools[0].parameters == TOOL["input_schema"]


def test_thinking_settings() -> None:
    assert to_core(request(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})).reasoning == (
        Reasoning("medium", 1024, required=True)
    )
    assert to_core(request(thinking={"type": "disabled"})).reasoning == Reasoning("none")
    assert to_core(request(thinking={"type": "adaptive"})).reasoning == Reasoning("medium")
    assert to_core(request()).reasoning is None


def test_sampling_metadata_and_seed() -> None:
    core = to_core(
        request(temperature=0.5, top_p=0.9, top_k=5, seed=9, stop_sequences=["END"], metadata={"user_id": "u-1"})
    )
    s = core.sampling
    assert (s.temperature, s.top_p, s.top_k, s.seed, s.max_tokens, s.stop) == (0.5, 0.9, 5, 9, 16, ("END",))
    assert core.user == "u-1" and core.n == 1


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"max_tokens": None}, "max_tokens", "max_tokens"),
        ({"max_tokens": 0}, "max_tokens", "max_tokens"),
        ({"temperature": 1.5}, "temperature", "temperature"),
        ({"top_p": -0.1}, "top_p", "top_p"),
        ({"top_k": -1}, "top_k", "top_k"),
        ({"messages": []}, "messages", "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0]", "system"),
        ({"messages": [{"role": "user", "content": [{"type": "document"}]}]}, "messages[0].content[0]", "document"),
        ({"stop_sequences": [""]}, "stop_sequences", "stop_sequences"),
        ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.budget_tokens", "budget_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking.budget_tokens", "max_tokens"),
        ({"tools": [{**TOOL, "name": "bad name"}]}, "tools[0].name", "tools[0].name"),
        ({"tools": [TOOL, TOOL]}, "tools", "unique"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type", "web_search_20250305"),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema", "input_schema"),
        ({"tools": [{**TOOL, "type": "bash_20250124"}]}, "tools[0].type", "bash_20250124"),
        ({"tool_choice": {"type": "any"}}, "tool_choice", "tools"),
        ({"tools": [TOOL], "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name", "nope"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}]},
            "messages[0].content[0].tool_use_id",
            "toolu_x",
        ),
        (
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The answer is"}]},
            "messages",
            "prefill",
        ),
    ],
)
def test_bad_requests_are_invalid_with_the_field_named(body: dict[str, Any], param: str, says: str) -> None:
    base = {"model": "m", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi"}]}
    error = invalid({**base, **body})
    assert error.param == param
    assert says in error.message


def test_missing_max_tokens_is_named() -> None:
    error = invalid({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    assert error.param == "max_tokens" and "max_tokens" in error.message


def test_count_request_has_no_output_settings() -> None:
    body = schemas.CountTokensRequest.model_validate(
        {
            "model": "m",
            "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [TOOL],
        }
    )
    core = count_request(body)
    assert core.messages[0] == Message("system", (TextPart("a\nb"),))
    assert core.sampling.max_tokens is None and core.tools[0].name == "get_weather"


def test_usage_excludes_cached_tokens() -> None:
    usage = Usage(input_tokens=100, output_tokens=7, cached_tokens=60, cache_write_tokens=10)
    assert usage_dict(usage) == {
        "input_tokens": 30,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 60,
        "output_tokens": 7,
    }


@pytest.mark.parametrize(
    ("finish", "sequence", "expected"),
    [
        ("stop", None, "end_turn"),
        ("stop", "END", "stop_sequence"),
        ("length", None, "max_tokens"),
        ("tool_calls", None, "tool_use"),
        ("content_filter", None, "refusal"),
    ],
)
def test_stop_reason_table(finish: Any, sequence: str | None, expected: str) -> None:
    assert stop_reason(finish, sequence) == expected


def test_from_core_orders_blocks_and_adds_cost() -> None:
    choice = Choice(
        index=0,
        text="It is sunny.",
        reasoning="Look it up.",
        tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}'), ToolCall("call_2", "noop", "")],
        finish_reason="tool_calls",
    )
    body = from_core(
        CoreResponse("msg_1", "m", 0, [choice], Usage(input_tokens=10, output_tokens=5), cost=Cost(30, 0.000015))
    )
    assert body == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "thinking", "thinking": "Look it up.", "signature": ""},
            {"type": "text", "text": "It is sunny."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "noop", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 5,
        },
        "meta": {"usage": {"credits_used": 30, "usd_spent": 0.000015}},
    }


def test_unparseable_tool_arguments_are_kept() -> None:
    choice = Choice(index=0, tool_calls=[ToolCall("c", "f", "{not json")], finish_reason="tool_calls")
    body = from_core(CoreResponse("msg_1", "m", 0, [choice], Usage()))
    assert body["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {"_raw_arguments": "{not json"}}]


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (e.InvalidRequest("x"), "invalid_request_error", 400),
        (e.ContextWindowExceeded("x"), "invalid_request_error", 400),
        (e.Unauthorized("x"), "authentication_error", 401),
        (e.InsufficientCredits("x"), "billing_error", 402),
        (e.PermissionDenied("x"), "permission_error", 403),
        (e.ModelNotFound("x"), "not_found_error", 404),
        (e.RateLimited("x", retry_after=1.0), "rate_limit_error", 429),
        (e.InternalError("x"), "api_error", 500),
        (e.Overloaded("x"), "overloaded_error", 529),
        (e.UpstreamError("x", upstream_status=500), "api_error", 500),
        (e.UpstreamError("x", upstream_status=529), "overloaded_error", 529),
        (e.UpstreamError("x", status=429, upstream_status=429), "rate_limit_error", 429),
        (e.UpstreamTimeout("x"), "timeout_error", 504),
        (e.UpstreamUnavailable("x"), "overloaded_error", 529),
    ],
)
def test_error_table(error: e.GatewrightError, kind: str, status: int) -> None:
    assert lookup(error) == (kind, status)
    # A bug's own text never reaches the caller (api/public.py); every other error says what it is.
    generic = "The server had an error while processing your request. It is logged; retry, or report it."
    message = generic if isinstance(error, e.InternalError) else "x"
    assert error_body(error, "req_1") == {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_1",
    }


def test_cache_control_becomes_breakpoints_where_the_caller_put_them() -> None:
    mark: Any = {"type": "ephemeral"}
    core = to_core(
        request(
            system=[
                {"type": "text", "text": "Manual.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "Notes."},
            ],
            tools=[{**TOOL, "cache_control": mark}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Weather?", "cache_control": mark}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}, "cache_control": mark}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny", "cache_control": mark}
                    ],
                },
            ],
        )
    )
    # The system prompt is the same text as without marks ("Manual.\nNotes."), cut at the breakpoint.
    assert core.messages[0].parts == (TextPart("Manual.", CacheMark("1h")), TextPart("\nNotes."))
    assert core.messages[0].text == "Manual.\nNotes."
    assert core.tools[0].cache == CacheMark()
    assert core.messages[1].parts == (TextPart("Weather?", CacheMark()),)
    assert core.messages[2].parts == (ToolCallPart("t1", "get_weather", "{}", CacheMark()),)
    assert core.messages[3].parts == (ToolResultPart("t1", "sunny", cache=CacheMark()),)
    assert core.cache_breakpoints == ((0, 0), (1, 0), (2, 0), (3, 0))


def test_signed_and_redacted_thinking_survive_the_round_trip() -> None:
    core = to_core(
        request(
            tools=[TOOL],
            messages=[
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Call it.", "signature": "sig-1"},
                        {"type": "redacted_thinking", "data": "opaque=="},
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}},
                    ],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
            ],
        )
    )
    assert core.messages[1].parts[:2] == (ThinkingPart("Call it.", "sig-1"), RedactedThinkingPart("opaque=="))
    choice = Choice(index=0, reasoning="Hm.", reasoning_signature="sig-2", redacted_reasoning=["x=="], text="Hi")
    body = from_core(CoreResponse("msg_1", "m", 0, [choice], Usage()))
    assert body["content"] == [
        {"type": "thinking", "thinking": "Hm.", "signature": "sig-2"},
        {"type": "redacted_thinking", "data": "x=="},
        {"type": "text", "text": "Hi"},
    ]
