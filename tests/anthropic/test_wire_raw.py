"""Raw HTTP checks of the Messages wire format, byte for byte where the SDK would be lenient."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.anthropic.sse import check_order, parse_frames
from tests.conftest import MODEL
from tests.support.app import AppGateway
from tests.support.procs import Gateway

HELLO = [{"role": "user", "content": "Hi"}]


def post(
    gateway: Gateway | AppGateway, body: Any, *, raw: bytes | None = None, path: str = "/v1/messages"
) -> httpx.Response:
    return gateway.http.post(
        path,
        content=raw if raw is not None else json.dumps(body).encode(),
        headers={
            "x-api-key": gateway.api_key or "",
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        },
    )


def test_text_stream_framing_and_order(gateway: Gateway) -> None:
    response = post(gateway, {"model": MODEL, "max_tokens": 3, "messages": HELLO, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["request-id"] == response.headers["x-request-id"]
    events = parse_frames(response.content)
    check_order(events)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names.count("ping") == 1
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["model"] == MODEL and start["content"] == []
    assert start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert deltas and all(set(delta) == {"type", "text"} and delta["type"] == "text_delta" for delta in deltas)
    final = events[-2][1]
    assert set(final) == {"type", "delta", "usage", "meta"}
    assert final["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert set(final["usage"]) == {
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    }
    assert final["usage"]["output_tokens"] == 3
    assert final["meta"]["usage"]["credits_used"] > 0
    assert events[-1][1] == {"type": "message_stop"}


def test_json_answer_has_exactly_anthropics_fields_plus_meta(gateway: Gateway) -> None:
    response = post(gateway, {"model": MODEL, "max_tokens": 2, "messages": HELLO})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage", "meta"]
    assert body["content"][0]["type"] == "text" and set(body["content"][0]) == {"type", "text"}


def test_error_object_and_headers(gateway: Gateway) -> None:
    response = post(gateway, None, raw=b'{"model": "x", "messages": ')
    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["type", "error", "request_id"]
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert set(body["error"]) == {"type", "message"} and "JSON" in body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"] == response.headers["x-request-id"]
    not_object = post(gateway, None, raw=b"[1, 2]")
    assert not_object.status_code == 400 and not_object.json()["error"]["type"] == "invalid_request_error"
    counted = post(gateway, {"model": MODEL}, path="/v1/messages/count_tokens")
    assert counted.status_code == 400 and "messages" in counted.json()["error"]["message"]


def test_tool_use_stream_framing(fake_gateway: AppGateway) -> None:
    body = {
        "model": "echo",
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": "a b"}],
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
    }
    events = parse_frames(post(fake_gateway, body).content)
    check_order(events)
    start = next(data for name, data in events if name == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    assert start["content_block"]["name"] == "t" and start["content_block"]["id"]
    fragments = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(set(delta) == {"type", "partial_json"} and delta["type"] == "input_json_delta" for delta in fragments)
    assert json.loads("".join(delta["partial_json"] for delta in fragments)) == {"echo": "a b"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
