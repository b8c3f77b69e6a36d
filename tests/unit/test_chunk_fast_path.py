"""The OpenAI stream renderer's short way for text frames gives the same bytes as its general way."""

from __future__ import annotations

import pytest

from gatewright.api.openai.stream import ChunkRenderer
from gatewright.core.events import TextDelta


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("request_id", [None, "req_1"])
@pytest.mark.parametrize("text", ["hello", 'quo"te\n', "\x00", "ü😀", "\\u0000"])
def test_text_frames_are_the_general_frames(include_usage: bool, request_id: str | None, text: str) -> None:
    renderer = ChunkRenderer("chatcmpl-x", 5, 'm"odel\x00', include_usage, request_id)
    renderer.render(TextDelta(0, "first"))  # the role frame is out: later text takes the short way
    fast = renderer.render(TextDelta(0, text))
    general = ChunkRenderer("chatcmpl-x", 5, 'm"odel\x00', include_usage, request_id).render(TextDelta(0, text))
    assert fast == general[1:]  # the general way opens the choice with its role frame first
    assert len(fast) == 1 and fast[0].startswith(b"data: {")
