"""Messages on gateways that run the deterministic `fake` backend: billing, rate-limit, overload and
upstream errors (before and after the first byte), tool-use streams and thinking blocks, all through
the official SDK. The fake echoes the last user message one word per token."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.anthropic.conftest import blocks, client_for
from tests.anthropic.sse import check_order, parse_frames
from tests.support.app import AppGateway

ECHO: list[Any] = [{"role": "user", "content": "one two three four"}]
TOOL: Any = {"name": "echo_tool", "description": "Echo.", "input_schema": {"type": "object"}}


def _kind(raised: pytest.ExceptionInfo[anthropic.APIStatusError]) -> str:
    body = raised.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["request_id"] == raised.value.request_id
    return str(body["error"]["type"])


def test_billing_error_when_the_worst_case_exceeds_the_balance(fake: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as raised:
        fake.messages.create(model="pricey", max_tokens=512, messages=ECHO)
    assert raised.value.status_code == 402 and _kind(raised) == "billing_error"
    assert "credits" in raised.value.message
    # The same model with a budget the balance covers is served and billed.
    small = fake.messages.create(model="pricey", max_tokens=2, messages=ECHO)
    assert small.usage.output_tokens == 2 and small.model_extra["meta"]["usage"]["credits_used"] > 0  # type: ignore[index]


def test_overloaded_upstream_is_overloaded_error_529(fake: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.OverloadedError) as raised:
        fake.messages.create(model="overloaded", max_tokens=4, messages=ECHO)
    assert raised.value.status_code == 529 and _kind(raised) == "overloaded_error"


def test_failing_upstream_is_api_error_500(fake: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as raised:
        fake.messages.create(model="broken", max_tokens=4, messages=ECHO)
    assert raised.value.status_code == 500 and _kind(raised) == "api_error"


def test_failure_after_the_first_byte_is_an_error_event(fake: anthropic.Anthropic, fake_gateway: AppGateway) -> None:
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        fake.messages.stream(model="dies-midway", max_tokens=8, messages=ECHO) as stream,
    ):
        for _ in stream:
            pass
    assert _kind(raised) == "api_error"

    response = fake_gateway.http.post(
        "/v1/messages",
        json={"model": "dies-midway", "max_tokens": 8, "messages": ECHO, "stream": True},
        headers={"x-api-key": fake_gateway.api_key or ""},
    )
    assert response.status_code == 200
    events = parse_frames(response.content)
    check_order(events, complete=False)
    texts = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert texts == ["one", " two"]
    name, data = events[-1]
    assert name == "error" and data["error"]["type"] == "api_error"
    assert data["request_id"] == response.headers["request-id"]


def test_rate_limit_error_with_retry_after(one_request_per_minute: AppGateway) -> None:
    limited = client_for(one_request_per_minute)
    first = limited.messages.with_raw_response.create(model="echo", max_tokens=2, messages=ECHO)
    assert first.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert first.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    with pytest.raises(anthropic.RateLimitError) as raised:
        limited.messages.create(model="echo", max_tokens=2, messages=ECHO)
    assert raised.value.status_code == 429 and _kind(raised) == "rate_limit_error"
    assert int(raised.value.response.headers["retry-after"]) >= 1


def test_forced_tool_use_streams_input_json_deltas(fake: anthropic.Anthropic) -> None:
    fragments: list[str] = []
    with fake.messages.stream(
        model="echo", max_tokens=8, tools=[TOOL], tool_choice={"type": "any"}, messages=ECHO
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                fragments.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert fragments
    assert final.stop_reason == "tool_use"
    [call] = final.content
    assert call.type == "tool_use" and call.name == "echo_tool"
    assert call.input == {"echo": "one two three four"}
    plain = fake.messages.create(
        model="echo", max_tokens=8, tools=[TOOL], tool_choice={"type": "tool", "name": "echo_tool"}, messages=ECHO
    )
    assert plain.stop_reason == "tool_use" and plain.content[0].input == call.input  # type: ignore[union-attr]


def test_tool_result_round_trip(fake: anthropic.Anthropic) -> None:
    first = fake.messages.create(model="echo", max_tokens=8, tools=[TOOL], tool_choice={"type": "any"}, messages=ECHO)
    call = first.content[0]
    assert call.type == "tool_use"
    answer = fake.messages.create(
        model="echo",
        max_tokens=8,
        tools=[TOOL],
        messages=[
            *ECHO,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "done", "is_error": True},
                    {"type": "text", "text": "thanks a lot"},
                ],
            },
        ],
    )
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].text == "thanks a lot"  # type: ignore[union-attr]


def test_thinking_blocks_stream_before_the_text(fake: anthropic.Anthropic) -> None:
    ask: list[Any] = [{"role": "user", "content": "<think> weigh it up </think> the answer"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    kinds: list[str] = []
    with fake.messages.stream(model="thinker", max_tokens=2048, thinking=thinking, messages=ask) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                kinds.append(event.delta.type)
        final = stream.get_final_message()
    assert kinds[0] == "thinking_delta" and kinds[-1] == "text_delta"
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking.strip() == "weigh it up"  # type: ignore[union-attr]
    assert final.content[1].text.strip() == "the answer"  # type: ignore[union-attr]
    plain = fake.messages.create(model="thinker", max_tokens=2048, thinking=thinking, messages=ask)
    assert blocks(plain.content) == blocks(final.content)


def test_thinking_on_a_model_without_reasoning_is_a_clear_400(fake: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        fake.messages.create(
            model="echo", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024}, messages=ECHO
        )
    assert _kind(raised) == "invalid_request_error" and "does not reason" in raised.value.message
    # Adaptive thinking leaves the choice to the model: one that cannot reason just answers.
    adaptive = fake.messages.create(model="echo", max_tokens=4, thinking={"type": "adaptive"}, messages=ECHO)
    assert [block.type for block in adaptive.content] == ["text"]


def test_count_tokens_refuses_what_the_model_cannot_take(fake: anthropic.Anthropic) -> None:
    image: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    with pytest.raises(anthropic.BadRequestError) as raised:
        fake.messages.count_tokens(model="echo", messages=[{"role": "user", "content": [image]}])
    assert "does not accept images" in raised.value.message
