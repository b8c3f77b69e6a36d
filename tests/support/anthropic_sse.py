"""A whole Anthropic message as the event stream Anthropic sends for it (streaming guide: one
``message_start``, each block started, filled by deltas and stopped, ``message_delta`` with the
stop reason and usage, ``message_stop``). The gateway always asks upstreams for a stream, so a
test that holds a whole message replays it this way."""

from __future__ import annotations

import json
from typing import Any


def _frame(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _deltas(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the block as content_block_start carries it, its deltas)."""
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": ""}, [{"type": "text_delta", "text": block["text"]}]
    if kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": block["thinking"]}]
        if block.get("signature"):
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return {"type": "thinking", "thinking": "", "signature": ""}, deltas
    if kind == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        return start, [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
    return block, []  # redacted_thinking and others come whole


def anthropic_stream(message: dict[str, Any]) -> bytes:
    usage = dict(message["usage"])
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    frames = [_frame("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        opened, deltas = _deltas(block)
        frames.append(
            _frame("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened})
        )
        frames += [
            _frame("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
        ]
        frames.append(_frame("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message.get("stop_sequence")}
    frames.append(
        _frame(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage["output_tokens"]}},
        )
    )
    frames.append(_frame("message_stop", {"type": "message_stop"}))
    return b"".join(frames)
