"""Render core events as Anthropic Messages SSE, in Anthropic's order:

    message_start → (content_block_start, ping once, content_block_delta…, content_block_stop)…
    → message_delta (stop_reason, cumulative usage) → message_stop

Every frame has ``event: <name>`` and the same name as ``"type"`` in its data. Blocks are indexed by
their position in the final ``content``; switching between text, thinking and a tool call closes the
open block. An error after the first byte is an ``event: error`` frame, and the stream ends there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from gatewright.api.anthropic.errors import error_body
from gatewright.api.anthropic.translate import StopReason, meta_dict, stop_reason, usage_dict
from gatewright.api.public import internal
from gatewright.api.sse import event_frame
from gatewright.core.errors import GatewrightError
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

MARKER = orjson.dumps("\x00")
PING = event_frame("ping", {"type": "ping"})
MESSAGE_STOP = event_frame("message_stop", {"type": "message_stop"})

# What each kind of block starts as, and how its deltas are wrapped.
BLOCK_START: dict[str, dict[str, Any]] = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}
DELTA: dict[str, tuple[str, str]] = {
    "text": ("text_delta", "text"),
    "thinking": ("thinking_delta", "thinking"),
    "tool_use": ("input_json_delta", "partial_json"),
}


def _delta(index: int, kind: str, text: str) -> bytes:
    delta_type, key = DELTA[kind]
    return event_frame(
        "content_block_delta",
        {"type": "content_block_delta", "index": index, "delta": {"type": delta_type, key: text}},
    )


def _stop_block(index: int) -> bytes:
    return event_frame("content_block_stop", {"type": "content_block_stop", "index": index})


class MessageRenderer:
    """Turns the events of one choice into frames; keeps which block is open."""

    __slots__ = (
        "_blocks",
        "_done",
        "_head",
        "_kind",
        "_message",
        "_open",
        "_pinged",
        "_reason",
        "_sequence",
        "_tail",
        "_tool_blocks",
    )

    def __init__(self, message_id: str, model: str, input_tokens: int) -> None:
        self._message: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Known so far: the prompt's size; cache reads are reported in message_delta.
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        self._blocks = 0  # blocks started so far: the next block's index
        self._open = -1  # index of the open block, -1 when none
        self._kind = ""
        # The open text or thinking block's delta frame is the same bytes around its text (most
        # frames of a stream): cut once a block from the frame orjson makes for a marker.
        self._head = b""
        self._tail = b""
        self._tool_blocks: list[int] = []  # core tool-call index → block index
        self._pinged = False
        self._reason: StopReason = "end_turn"
        self._sequence: str | None = None
        self._done = False

    def start(self) -> bytes:
        return event_frame("message_start", {"type": "message_start", "message": self._message})

    def _close(self, frames: list[bytes]) -> None:
        if self._open >= 0:
            frames.append(_stop_block(self._open))
            self._open = -1
            self._kind = ""

    def _begin(self, frames: list[bytes], kind: str, block: dict[str, Any]) -> int:
        self._close(frames)
        index = self._blocks
        self._blocks += 1
        frames.append(
            event_frame("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        if not self._pinged:
            frames.append(PING)
            self._pinged = True
        self._open = index
        self._kind = kind
        if kind in BLOCK_START:
            frame = _delta(index, kind, "\x00")
            cut = frame.rindex(MARKER)  # the text is the frame's last field
            self._head, self._tail = frame[:cut], frame[cut + len(MARKER) :]
        return index

    def _text(self, frames: list[bytes], kind: str, text: str) -> None:
        if not text:
            return
        if self._kind != kind:
            self._begin(frames, kind, BLOCK_START[kind])
        frames.append(self._head + orjson.dumps(text) + self._tail)

    def render(self, event: Event) -> list[bytes]:
        if type(event) is TextDelta and event.choice == 0 and self._kind == "text" and event.text:
            return [self._head + orjson.dumps(event.text) + self._tail]  # most frames: a token of open text
        frames: list[bytes] = []
        match event:
            case TextDelta(choice=0, text=text):
                self._text(frames, "text", text)
            case ReasoningDelta(choice=0, text=text):
                self._text(frames, "thinking", text)
            case ReasoningSignature(choice=0, signature=signature):
                # As Anthropic: the signature is the thinking block's last delta, then the block ends.
                if self._kind != "thinking":
                    self._begin(frames, "thinking", BLOCK_START["thinking"])
                frames.append(
                    event_frame(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self._open,
                            "delta": {"type": "signature_delta", "signature": signature},
                        },
                    )
                )
                self._close(frames)
            case RedactedReasoning(choice=0, data=data):
                self._begin(frames, "redacted_thinking", {"type": "redacted_thinking", "data": data})
                self._close(frames)
            case ToolCallStart(choice=0, id=call_id, name=name):
                block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
                self._tool_blocks.append(self._begin(frames, "tool_use", block))
            case ToolCallDelta(choice=0, index=k, arguments=fragment) if fragment:
                frames.append(_delta(self._tool_blocks[k], "tool_use", fragment))
            case ChoiceEnd(choice=0, finish_reason=finish, stop_sequence=sequence):
                self._close(frames)
                self._reason = stop_reason(finish, sequence)
                self._sequence = sequence
            case UsageReport(usage=usage, cost=cost):
                self._close(frames)
                meta = meta_dict(cost, usage)
                frames.extend(self._end(usage_dict(usage), {"meta": meta} if meta else {}))
        return frames

    def _end(self, usage: dict[str, int], extra: dict[str, Any]) -> list[bytes]:
        self._done = True
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._reason, "stop_sequence": self._sequence},
            "usage": usage,
            **extra,  # gatewright extension: the request's cost (meta.usage), as in the JSON answer
        }
        return [event_frame("message_delta", delta), MESSAGE_STOP]

    def finish(self) -> list[bytes]:
        """Frames still owed when the events ended without a usage report."""
        if self._done:
            return []
        frames: list[bytes] = []
        self._close(frames)
        frames.extend(self._end({"output_tokens": 0}, {}))
        return frames


async def render(events: AsyncIterator[Event], renderer: MessageRenderer, request_id: str) -> AsyncIterator[bytes]:
    try:
        yield renderer.start()  # inside: a client leaving during it closes the events (the hold) too
        async for event in events:
            for frame in renderer.render(event):
                yield frame
    except Exception as raised:
        # After the first byte an error can only travel in-stream; the SDK raises on `event: error`.
        error = raised if isinstance(raised, GatewrightError) else internal(raised)
        yield event_frame("error", error_body(error, request_id))
        return
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    for frame in renderer.finish():
        yield frame
