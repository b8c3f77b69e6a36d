"""The Anthropic stream renderer's short way for text and thinking deltas (bytes cut once a block)
gives the same frames as building each frame whole."""

from __future__ import annotations

import orjson
import pytest

from gatewright.api.anthropic.stream import MessageRenderer
from gatewright.api.sse import event_frame
from gatewright.core.events import (
    ChoiceEnd,
    Event,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)

TEXTS = ["hello", 'quo"te\n', "\x00", "ü😀", "\\u0000", "</script>", " "]


def whole(index: int, kind: str, text: str) -> bytes:
    key, delta_type = ("text", "text_delta") if kind == "text" else ("thinking", "thinking_delta")
    payload = {"type": "content_block_delta", "index": index, "delta": {"type": delta_type, key: text}}
    return event_frame("content_block_delta", payload)


@pytest.mark.parametrize("text", TEXTS)
def test_text_and_thinking_deltas_are_the_whole_frames(text: str) -> None:
    renderer = MessageRenderer("msg_1", 'm"odel\x00', 3)
    events: list[tuple[Event, bytes | None]] = [
        (ReasoningDelta(0, "why"), None),
        (ReasoningDelta(0, text), whole(0, "thinking", text)),
        (ReasoningSignature(0, "sig"), None),
        (TextDelta(0, "first"), None),
        (TextDelta(0, text), whole(1, "text", text)),
        (TextDelta(0, text, ()), whole(1, "text", text)),  # logprobs are not Anthropic's: the same frame
        (TextDelta(1, text), None),  # another choice: Anthropic has none, nothing is sent
        (ToolCallStart(0, 0, "call_1", "f"), None),
        (ToolCallDelta(0, 0, '{"a":'), None),
        (TextDelta(0, text), None),  # a new text block after the tool call: index 3
        (TextDelta(0, text), whole(3, "text", text)),
        (RedactedReasoning(0, "opaque"), None),
        (TextDelta(0, text), None),
        (TextDelta(0, text), whole(5, "text", text)),
        (TextDelta(0, ""), None),
        (ChoiceEnd(0, "stop"), None),
    ]
    for event, expected in events:
        frames = renderer.render(event)
        if expected is not None:
            assert frames == [expected]
        elif (isinstance(event, TextDelta) and event.choice == 1) or event == TextDelta(0, ""):
            assert frames == []
    # every delta frame of a stream, whatever opened its block, parses back to its text
    renderer = MessageRenderer("msg_2", "m", 3)
    frames = [f for e in (TextDelta(0, text), ReasoningDelta(0, text), TextDelta(0, text)) for f in renderer.render(e)]
    deltas = [orjson.loads(f.split(b"\ndata: ", 1)[1]) for f in frames if f.startswith(b"event: content_block_delta")]
    assert [(d["index"], d["delta"]) for d in deltas] == [
        (0, {"type": "text_delta", "text": text}),
        (1, {"type": "thinking_delta", "thinking": text}),
        (2, {"type": "text_delta", "text": text}),
    ]
