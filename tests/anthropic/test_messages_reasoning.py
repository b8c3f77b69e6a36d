"""Thinking on a backend that reasons: an OpenAI-compatible upstream process replaying a real GLM-5.1
answer (reasoning in `reasoning_content`), asked through Messages with `thinking` enabled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx

from tests.anthropic.conftest import client_for
from tests.support.app import AppGateway

RECORDING = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "glm" / "glm-5-1.response.json").read_text())
ASK: list[Any] = [{"role": "user", "content": "What do you think of mankind?"}]
THINKING: Any = {"type": "enabled", "budget_tokens": 2048}


def test_thinking_block_then_text_with_the_upstreams_usage(
    reasoning_gateway: AppGateway, reasoning_upstream: str
) -> None:
    message = client_for(reasoning_gateway).messages.create(
        model="glm-5-1", max_tokens=4096, thinking=THINKING, messages=ASK
    )
    recorded = RECORDING["choices"][0]["message"]
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == recorded["reasoning_content"]  # type: ignore[union-attr]
    assert message.content[1].text == recorded["content"]  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    usage = RECORDING["usage"]
    assert message.usage.input_tokens == usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"]
    assert message.usage.output_tokens == usage["completion_tokens"]
    # The upstream was asked to reason, and for no more output than the caller allowed.
    sent = httpx.get(f"{reasoning_upstream}/last").json()
    assert sent["reasoning_effort"] == "medium" and sent["max_tokens"] == 4096


def test_streamed_thinking_is_reassembled_by_the_sdk(reasoning_gateway: AppGateway) -> None:
    client: anthropic.Anthropic = client_for(reasoning_gateway)
    deltas: dict[str, int] = {}
    with client.messages.stream(model="glm-5-1", max_tokens=4096, thinking=THINKING, messages=ASK) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                deltas[event.delta.type] = deltas.get(event.delta.type, 0) + 1
        final = stream.get_final_message()
    assert deltas["thinking_delta"] > 1 and deltas["text_delta"] > 1 and set(deltas) == {"thinking_delta", "text_delta"}
    recorded = RECORDING["choices"][0]["message"]
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == recorded["reasoning_content"]  # type: ignore[union-attr]
    assert final.content[1].text == recorded["content"]  # type: ignore[union-attr]
    assert final.usage.output_tokens == RECORDING["usage"]["completion_tokens"]
