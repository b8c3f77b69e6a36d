"""Reasoning from upstreams, through the OpenAI dialect: the seeds' real GLM answers replayed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.reasoning.conftest import PRICES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "glm"
ASK = [{"role": "user", "content": "Hi! What do you think about mankind?"}]


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


GLM51 = recorded("glm-5-1.response.json")
GLM5 = recorded("glm-5.response.json")


def credits_for(prompt: int, completion: int) -> int:
    return math.ceil((prompt * PRICES["input"] + completion * PRICES["output"]) * 2)


@pytest.mark.parametrize("model", ["glm-5-1", "glm-5-1-reasoning-field"])
def test_whole_response_carries_reasoning_and_bills_it_as_output(glm: openai.OpenAI, model: str) -> None:
    completion = glm.chat.completions.create(model=model, messages=ASK)
    message = completion.choices[0].message
    expected = GLM51["choices"][0]["message"]
    assert message.content == expected["content"]
    assert message.model_extra["reasoning_content"] == expected["reasoning_content"]  # type: ignore[index]
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (14, 1677)
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 1056
    meta = completion.model_extra["meta"]["usage"]  # type: ignore[index]
    assert meta["credits_used"] == credits_for(14, 1677)  # not the upstream gateway's own 19237
    assert completion.model == model


def test_stream_sends_reasoning_before_content(glm: openai.OpenAI) -> None:
    stream = glm.chat.completions.create(
        model="glm-5-1", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    kinds: list[str] = []
    reasoning, content = [], []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta.model_extra or {}
            if delta.get("reasoning_content"):
                reasoning.append(delta["reasoning_content"])
                kinds.append("r")
            if choice.delta.content:
                content.append(choice.delta.content)
                kinds.append("c")
    expected = GLM51["choices"][0]["message"]
    assert "".join(reasoning) == expected["reasoning_content"]
    assert "".join(content) == expected["content"]
    assert kinds.index("c") > kinds.index("r") and "r" not in kinds[kinds.index("c") :]
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 1056


def test_glm5_without_reasoning_count(glm: openai.OpenAI) -> None:
    completion = glm.chat.completions.create(model="glm-5", messages=ASK)
    message = completion.choices[0].message
    assert message.model_extra["reasoning_content"] == GLM5["choices"][0]["message"]["reasoning_content"]  # type: ignore[index]
    assert completion.usage is not None and completion.usage.completion_tokens == 1334


@pytest.mark.parametrize("stream", [False, True])
def test_think_tags_are_split_even_when_cut(glm: openai.OpenAI, stream: bool) -> None:
    expected = GLM51["choices"][0]["message"]
    if stream:
        chunks = list(
            glm.chat.completions.create(
                model="glm-5-1-tags", messages=ASK, stream=True, stream_options={"include_usage": True}
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        thought = "".join(
            (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices
        )
        usage = chunks[-1].usage
    else:
        completion = glm.chat.completions.create(model="glm-5-1-tags", messages=ASK)
        text = completion.choices[0].message.content or ""
        thought = completion.choices[0].message.model_extra["reasoning_content"]  # type: ignore[index]
        usage = completion.usage
    assert "<think>" not in text and "</think>" not in text
    assert text == expected["content"] and thought == expected["reasoning_content"]
    # The upstream reported reasoning tokens, so they are passed through rather than estimated.
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 1056


def test_tags_without_upstream_usage_are_estimated(glm: openai.OpenAI) -> None:
    chunks = list(
        glm.chat.completions.create(
            model="glm-5-1-tags-no-usage", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    reasoning = usage.completion_tokens_details.reasoning_tokens or 0
    assert 0 < reasoning < usage.completion_tokens


@pytest.mark.parametrize(
    ("extra", "sent"),
    [
        ({"reasoning_effort": "high"}, {"reasoning_effort": "high"}),
        ({"reasoning_effort": "minimal"}, {"reasoning_effort": "low"}),
        ({"extra_body": {"thinking": {"type": "enabled", "budget_tokens": 2048}}}, {"reasoning_effort": "medium"}),
        ({"extra_body": {"reasoning": {"effort": "low"}}}, {"reasoning_effort": "low"}),
    ],
)
def test_reasoning_settings_reach_the_upstream(
    glm: openai.OpenAI, replay_upstream: str, extra: dict[str, Any], sent: dict[str, Any]
) -> None:
    glm.chat.completions.create(model="glm-5-1", messages=ASK, **extra)
    body = httpx.get(f"{replay_upstream}/last").json()
    for key, value in sent.items():
        assert body[key] == value
