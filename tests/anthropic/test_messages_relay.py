"""Messages in, Messages out: the gateway in front of an Anthropic-style upstream (a loopback server
replaying Anthropic's own recorded streams from the SDK's source distribution). What the SDK
reassembles from our stream must equal what it reassembles from the recording: same blocks, stop
reason and usage, cache reads and writes included (converted to core's whole-prompt count and back).
Thinking signatures and redacted thinking are Anthropic-only data the neutral core does not carry."""

from __future__ import annotations

import json
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

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic_upstream"
ROUTE = "claude"
WEATHER: Any = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"location": {}}}}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


# Session-scoped like every in-process gateway: an upstream backend's close() closes the connection
# pools of all of them (backends/upstream.close_clients), so none may close before the session ends.
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
prices = {{ input = 3.0, cached_input = 0.3, output = 15.0 }}
capabilities = {{ tools = true, reasoning = true }}
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
    keep = {"text": ("text",), "thinking": ("thinking",), "tool_use": ("id", "name", "input")}
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
    "recording", ["basic.stream.sse", "tool_use.stream.sse", "thinking_tool.stream.sse", "cache_usage.stream.sse"]
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


def test_whole_answer_is_relayed(relay: AppGateway, claude_upstream: FaultyUpstream) -> None:
    recorded = json.loads((RECORDINGS / "thinking_tool.response.json").read_text())
    claude_upstream.script(ROUTE, Raw(json.dumps(recorded).encode()))
    ours = client_for(relay).messages.create(model="claude-relay", max_tokens=1024, tools=[WEATHER], messages=ASK)
    assert carried(ours.to_dict()) == carried(recorded)
    meta = ours.model_extra["meta"]["usage"]  # type: ignore[index]
    assert meta["credits_used"] > 0


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
