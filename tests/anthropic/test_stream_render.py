"""The Messages SSE renderer on hand-made core event streams, judged by the official SDK's own
stream accumulator (which raises on bad order, bad indexes and bad tool JSON)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message

from gatewright.api.anthropic.stream import MessageRenderer, render
from gatewright.core.errors import UpstreamError
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
from gatewright.core.types import Cost, Usage
from tests.anthropic.sse import check_order, parse_frames


async def _events(items: Sequence[Event], fail: Exception | None = None) -> AsyncIterator[Event]:
    for item in items:
        yield item
    if fail is not None:
        raise fail


async def rendered(items: Sequence[Event], fail: Exception | None = None) -> list[tuple[str, dict[str, Any]]]:
    renderer = MessageRenderer("msg_test", "m", input_tokens=12)
    body = b"".join([frame async for frame in render(_events(items, fail), renderer, "req_test")])
    return parse_frames(body)


def sdk_message(events: list[tuple[str, dict[str, Any]]]) -> Message:
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, data in events:
        if name != "ping":
            snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)  # type: ignore[arg-type]
    assert snapshot is not None
    return snapshot


USAGE = UsageReport(Usage(input_tokens=12, output_tokens=9, cached_tokens=8), Cost(40, 0.00002))


async def test_thinking_then_text_then_tools_are_separate_blocks_in_order() -> None:
    events = await rendered(
        [
            ReasoningDelta(0, "Need "),
            ReasoningDelta(0, "weather."),
            TextDelta(0, ""),  # empty deltas open nothing
            TextDelta(0, "Checking"),
            TextDelta(0, " now."),
            ToolCallStart(0, 0, "toolu_a", "get_weather"),
            ToolCallDelta(0, 0, '{"city": '),
            ToolCallDelta(0, 0, '"Paris"}'),
            ToolCallStart(0, 1, "toolu_b", "get_time"),
            ToolCallDelta(0, 1, ""),
            ToolCallDelta(0, 1, "{}"),
            ChoiceEnd(0, "tool_calls"),
            USAGE,
        ]
    )
    check_order(events)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names.count("ping") == 1
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert starts == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}},
        {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}},
    ]
    deltas = [data["delta"]["type"] for name, data in events if name == "content_block_delta"]
    assert deltas == ["thinking_delta"] * 2 + ["text_delta"] * 2 + ["input_json_delta"] * 3

    message = sdk_message(events)
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[0].thinking == "Need weather."  # type: ignore[union-attr]
    assert message.content[1].text == "Checking now."  # type: ignore[union-attr]
    assert message.content[2].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.content[3].input == {}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    # Cumulative usage in message_delta overwrites message_start's; cached tokens are not input.
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (4, 8, 9)


async def test_message_start_and_delta_payloads() -> None:
    events = await rendered([TextDelta(0, "Hi"), ChoiceEnd(0, "stop", "END"), USAGE])
    assert events[0][1] == {
        "type": "message_start",
        "message": {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        },
    }
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
        "usage": {
            "input_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 8,
            "output_tokens": 9,
        },
        "meta": {"usage": {"credits_used": 40, "usd_spent": 0.00002}},
    }
    assert events[-1][1] == {"type": "message_stop"}


async def test_text_after_tool_call_opens_a_new_block() -> None:
    events = await rendered(
        [
            ToolCallStart(0, 0, "toolu_a", "f"),
            ToolCallDelta(0, 0, "{}"),
            TextDelta(0, "done"),
            ChoiceEnd(0, "stop"),
            USAGE,
        ]
    )
    check_order(events)
    message = sdk_message(events)
    assert [block.type for block in message.content] == ["tool_use", "text"]


async def test_no_content_still_ends_the_message() -> None:
    events = await rendered([ChoiceEnd(0, "length"), USAGE])
    check_order(events)
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert sdk_message(events).stop_reason == "max_tokens"


async def test_stream_without_usage_report_is_still_closed() -> None:
    events = await rendered([TextDelta(0, "partial")])
    check_order(events)
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"


async def test_error_after_first_byte_is_an_error_event_and_the_end() -> None:
    events = await rendered([TextDelta(0, "Hel")], fail=UpstreamError("upstream dropped", upstream_status=529))
    check_order(events, complete=False)
    name, data = events[-1]
    assert name == "error"
    assert data == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "upstream dropped"},
        "request_id": "req_test",
    }
    assert "message_stop" not in [n for n, _ in events]


async def test_estimated_usage_is_marked_in_meta() -> None:
    guessed = UsageReport(Usage(input_tokens=12, output_tokens=3, estimated=True), Cost(9, 0.0000045))
    events = await rendered([TextDelta(0, "Hi"), ChoiceEnd(0, "stop"), guessed])
    assert events[-2][1]["meta"] == {"usage": {"credits_used": 9, "usd_spent": 0.0000045, "estimated": True}}


async def test_signature_ends_its_thinking_block_and_redacted_thinking_is_a_whole_block() -> None:
    events = await rendered(
        [
            ReasoningDelta(0, "Weather first."),
            ReasoningSignature(0, "sig-1"),
            RedactedReasoning(0, "opaque=="),
            ReasoningDelta(0, "Then the time."),  # after a signature: a new thinking block
            ReasoningSignature(0, "sig-2"),
            TextDelta(0, "Done."),
            ChoiceEnd(0, "stop"),
            USAGE,
        ]
    )
    check_order(events)
    signature = [d for n, d in events if n == "content_block_delta" and d["delta"]["type"] == "signature_delta"]
    assert [d["index"] for d in signature] == [0, 2]
    message = sdk_message(events)
    assert [b.to_dict() for b in message.content] == [
        {"type": "thinking", "thinking": "Weather first.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "opaque=="},
        {"type": "thinking", "thinking": "Then the time.", "signature": "sig-2"},
        {"type": "text", "text": "Done."},
    ]


class _Watched:
    """Core events whose ``aclose`` says when it ran (the pipeline's, which settles the hold)."""

    def __init__(self) -> None:
        self.closed = False

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> Event:
        return TextDelta(0, "hi")

    async def aclose(self) -> None:
        self.closed = True


async def test_frames_closed_after_the_first_closes_the_events() -> None:
    """The client can leave while the first frame (``message_start``) is being written: closing
    the frames there (``EventStream`` does) must close the events too, not leave them (and the
    request's hold) to the garbage collector."""
    events = _Watched()
    frames = render(events, MessageRenderer("msg_test", "m", input_tokens=12), "req_test")
    first = await frames.__anext__()
    assert b"message_start" in first
    await frames.aclose()  # type: ignore[attr-defined]
    assert events.closed
