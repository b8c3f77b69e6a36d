"""Messages in, Messages out: the gateway in front of an Anthropic-style upstream (a loopback server
replaying Anthropic's own recorded streams from the SDK's source distribution). What the SDK
reassembles from our stream must equal what it reassembles from the recording: same blocks, stop
reason and usage, cache reads and writes included (converted to core's whole-prompt count and back),
thinking signatures and redacted thinking included (the neutral core carries them, so a tool-use loop
with extended thinking works through the relay)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.lib.streaming._messages import accumulate_event

from tests.anthropic.conftest import client_for
from tests.anthropic.sse import parse_frames
from tests.support.app import AppGateway, app_gateway
from tests.support.faulty_upstream import FaultyUpstream, Raw, running_faulty_upstream, sse
from tests.support.framework import agent_turn, forced_call_from_stream

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic_upstream"
ROUTE = "claude"
WEATHER: Any = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"location": {}}}}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


# Session-scoped like every in-process gateway (they share one event loop, whose connection pools
# an upstream backend's close() closes: backends/upstream.close_clients).
@pytest.fixture(scope="session")
def claude_upstream() -> Iterator[FaultyUpstream]:
    with running_faulty_upstream() as server:
        yield server


@pytest.fixture(scope="session")
def relay(tmp_path_factory: pytest.TempPathFactory, claude_upstream: FaultyUpstream) -> Iterator[AppGateway]:
    root = tmp_path_factory.mktemp("anthropic-relay")
    catalog = root / "catalog.toml"
    catalog.write_text(
        f"""
[[models]]
id = "claude-relay"
context_window = 200000
max_output = 8192
backend = "anthropic"
base_url = "{claude_upstream.base_url(ROUTE)}"
upstream_model = "claude-sonnet-4-5"
prices = {{ input = 3.0, cached_input = 0.3, cache_write_input = 3.75, output = 15.0 }}
capabilities = {{ tools = true, reasoning = true, vision = true }}
"""
    )
    with app_gateway(root, catalog=catalog) as gw:
        yield gw


def recorded_message(name: str) -> dict[str, Any]:
    """The message the SDK itself assembles from a recorded stream."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    recorded = (RECORDINGS / name).read_bytes().rstrip(b"\n") + b"\n\n"  # files end without the blank line
    for event, data in parse_frames(recorded):
        if event != "ping":
            snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)  # type: ignore[arg-type]
    assert snapshot is not None
    return snapshot.to_dict()


def carried(message: dict[str, Any]) -> dict[str, Any]:
    """What a relay through the neutral core keeps of a message."""
    keep = {
        "text": ("text",),
        "thinking": ("thinking", "signature"),
        "redacted_thinking": ("data",),
        "tool_use": ("id", "name", "input"),
    }
    usage = message["usage"]
    return {
        "content": [
            {"type": b["type"], **{k: b[k] for k in keep[b["type"]]}} for b in message["content"] if b["type"] in keep
        ],
        "stop_reason": message["stop_reason"],
        "stop_sequence": message["stop_sequence"],
        "usage": {
            "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"],
            "cache_read_input_tokens": usage.get("cache_read_input_tokens") or 0,
            "cache_creation_input_tokens": usage.get("cache_creation_input_tokens") or 0,
        },
    }


@pytest.mark.parametrize(
    "recording",
    [
        "basic.stream.sse",
        "tool_use.stream.sse",
        "thinking_tool.stream.sse",
        "cache_usage.stream.sse",
        "thinking_redacted.stream.sse",
    ],
)
def test_recorded_stream_is_relayed_as_recorded(
    relay: AppGateway, claude_upstream: FaultyUpstream, recording: str
) -> None:
    # Sent in uneven pieces, so the upstream parser meets lines cut in half.
    claude_upstream.script(ROUTE, sse((RECORDINGS / recording).read_bytes(), pieces=7))
    with client_for(relay).messages.stream(
        model="claude-relay", max_tokens=1024, tools=[WEATHER], messages=ASK
    ) as stream:
        ours = stream.get_final_message().to_dict()
    assert carried(ours) == carried(recorded_message(recording))
    assert ours["model"] == "claude-relay" and ours["id"].startswith("msg_")
    sent = claude_upstream.seen(ROUTE)[-1].body
    assert (
        sent["stream"] is True
        and sent["model"] == "claude-sonnet-4-5"
        and sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": ASK[0]["content"]}]}]
    )


def test_whole_answer_is_the_upstream_stream_collected(relay: AppGateway, claude_upstream: FaultyUpstream) -> None:
    claude_upstream.script(ROUTE, sse((RECORDINGS / "thinking_redacted.stream.sse").read_bytes(), pieces=9))
    ours = client_for(relay).messages.create(model="claude-relay", max_tokens=1024, tools=[WEATHER], messages=ASK)
    assert carried(ours.to_dict()) == carried(recorded_message("thinking_redacted.stream.sse"))
    assert claude_upstream.seen(ROUTE)[-1].body["stream"] is True
    # Billed at the model's prices: 20 plain input tokens at 3.0, 50 read from the cache at 0.3, 30
    # written to it at 3.75, 40 output at 15.0 USD per million = 787.5e-6 USD = 1575 credits.
    meta = ours.model_extra["meta"]["usage"]  # type: ignore[index]
    assert meta["credits_used"] == 1575


def test_extended_thinking_tool_loop_sends_signature_and_redacted_thinking_back(
    relay: AppGateway, claude_upstream: FaultyUpstream
) -> None:
    client = client_for(relay)
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    claude_upstream.script(ROUTE, sse((RECORDINGS / "thinking_redacted.stream.sse").read_bytes(), pieces=9))
    with client.messages.stream(
        model="claude-relay", max_tokens=2048, thinking=thinking, tools=[WEATHER], messages=ASK
    ) as stream:
        first = stream.get_final_message()
    call = next(b for b in first.content if b.type == "tool_use")
    claude_upstream.script(ROUTE, sse((RECORDINGS / "basic.stream.sse").read_bytes()))
    follow_up: list[Any] = [
        *ASK,
        {"role": "assistant", "content": [b.to_dict() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    answer = client.messages.create(
        model="claude-relay", max_tokens=2048, thinking=thinking, tools=[WEATHER], messages=follow_up
    )
    assert answer.content[0].type == "text"
    sent = claude_upstream.seen(ROUTE)[-1].body["messages"][1]
    assert sent["role"] == "assistant"
    assert sent["content"] == [
        {"type": "thinking", "thinking": "The user wants the weather in Paris.", "signature": "EqQBCgIYAhIMsig"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
    ]


def test_cache_control_reaches_the_upstream_and_its_counts_reach_chat_completions(
    relay: AppGateway, claude_upstream: FaultyUpstream
) -> None:
    claude_upstream.script(ROUTE, sse((RECORDINGS / "thinking_redacted.stream.sse").read_bytes()))
    client_for(relay).messages.create(
        model="claude-relay",
        max_tokens=256,
        system=[{"type": "text", "text": "A long manual.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        tools=[{**WEATHER, "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}
        ],
    )
    sent = claude_upstream.seen(ROUTE)[-1].body
    assert sent["system"] == [
        {"type": "text", "text": "A long manual.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    assert sent["tools"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    # The same counts, in the OpenAI dialect: the whole prompt, the cached part, the written part.
    claude_upstream.script(ROUTE, sse((RECORDINGS / "thinking_redacted.stream.sse").read_bytes()))
    completion = relay.http.post(
        "/v1/chat/completions",
        json={"model": "claude-relay", "messages": ASK, "max_tokens": 256},
        headers={"authorization": f"Bearer {relay.api_key}"},
    ).json()
    usage = completion["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (100, 40)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 50
    assert usage["prompt_tokens_details"]["cache_write_tokens"] == 30
    assert completion["meta"]["usage"]["credits_used"] == 1575
    assert completion["request_id"] and "system_fingerprint" not in completion


def test_upstream_overload_mid_stream_reaches_the_client_as_an_error_event(
    relay: AppGateway, claude_upstream: FaultyUpstream
) -> None:
    claude_upstream.script(ROUTE, sse((RECORDINGS / "overloaded_mid_stream.sse").read_bytes()))
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client_for(relay).messages.stream(model="claude-relay", max_tokens=64, messages=ASK) as stream,
    ):
        for _ in stream:
            pass
    body = raised.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "overloaded_error"


def test_count_tokens_is_the_upstreams_own_count(relay: AppGateway, claude_upstream: FaultyUpstream) -> None:
    claude_upstream.script(ROUTE, Raw(b'{"input_tokens": 1742}'))
    image: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    counted = client_for(relay).messages.count_tokens(
        model="claude-relay",
        tools=[WEATHER],
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}],
    )
    assert counted.input_tokens == 1742
    sent = claude_upstream.seen(ROUTE)[-1]
    assert sent.path.endswith("/v1/messages/count_tokens") and sent.body["tools"][0]["name"] == "get_weather"


def test_agent_framework_turn_reaches_an_anthropic_upstream_translated(
    relay: AppGateway, claude_upstream: FaultyUpstream
) -> None:
    claude_upstream.script(ROUTE, sse((RECORDINGS / "tool_use.stream.sse").read_bytes(), pieces=7))
    client = relay.openai()
    chunks = list(client.chat.completions.create(**agent_turn("claude-relay", stream=True)))
    forced_call_from_stream(chunks)
    sent = claude_upstream.seen(ROUTE)[-1].body
    assert sent["system"] == "You are a weather assistant. Be brief."  # the parts, joined
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny, 21 C"},
                {"type": "text", "text": "And in Rome?"},
            ],
        },
    ]
    assert sent["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert sent["metadata"] == {"user_id": "user-7"}
    assert not {"store", "service_tier"} & set(sent)  # metadata only: not forwarded


def test_chat_completions_tool_loop_keeps_signed_thinking_as_reasoning_details(
    relay: AppGateway, claude_upstream: FaultyUpstream
) -> None:
    client = relay.openai()
    ask: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]}}]
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    claude_upstream.script(ROUTE, sse((RECORDINGS / "thinking_redacted.stream.sse").read_bytes(), pieces=9))
    first = client.chat.completions.create(
        model="claude-relay", messages=ask, tools=tools, max_tokens=2048, extra_body=thinking
    )
    message = first.choices[0].message.to_dict()
    assert message["reasoning_details"] == [
        {
            "type": "reasoning.text",
            "text": "The user wants the weather in Paris.",
            "signature": "EqQBCgIYAhIMsig",
            "index": 0,
        },
        {"type": "reasoning.encrypted", "data": "EmwKAhgBEgy3va3pzix", "index": 1},
    ]
    # Streamed, the signature and the encrypted block arrive as reasoning_details deltas.
    claude_upstream.script(ROUTE, sse((RECORDINGS / "thinking_redacted.stream.sse").read_bytes(), pieces=9))
    chunks = list(
        client.chat.completions.create(
            model="claude-relay", messages=ask, tools=tools, max_tokens=2048, stream=True, extra_body=thinking
        )
    )
    details = [
        d for c in chunks if c.choices for d in (c.choices[0].delta.model_extra or {}).get("reasoning_details", [])
    ]
    assert [(d["type"], d["index"]) for d in details] == [("reasoning.text", 0), ("reasoning.encrypted", 1)]
    # Sent back as the framework keeps it, the thinking reaches the upstream signed, before the call.
    claude_upstream.script(ROUTE, sse((RECORDINGS / "basic.stream.sse").read_bytes()))
    call = message["tool_calls"][0]
    follow_up = [*ask, message, {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    client.chat.completions.create(
        model="claude-relay", messages=follow_up, tools=tools, max_tokens=2048, extra_body=thinking
    )
    sent = claude_upstream.seen(ROUTE)[-1].body["messages"][1]["content"]
    assert sent[:2] == [
        {"type": "thinking", "thinking": "The user wants the weather in Paris.", "signature": "EqQBCgIYAhIMsig"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
    ]
    assert sent[-1]["type"] == "tool_use"
