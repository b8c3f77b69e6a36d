"""Anthropic Messages against a live gateway and the real embedded model, through the official
`anthropic` SDK. This SDK version has no sampling arguments (temperature, top_p, top_k), so they and
gatewright's `seed` extension travel in `extra_body`, as a client would send them."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.anthropic.conftest import blocks
from tests.conftest import MODEL
from tests.support.procs import Gateway

HELLO: list[Any] = [{"role": "user", "content": "Say hello in three words."}]
SEEDED: dict[str, Any] = {"temperature": 1.0, "top_p": 0.8, "top_k": 20, "seed": 1234}


def test_plain_message_shape_usage_and_cost(messages: anthropic.Anthropic) -> None:
    raw = messages.messages.with_raw_response.create(model=MODEL, max_tokens=8, messages=HELLO, extra_body={"seed": 1})
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    assert int(raw.headers["anthropic-ratelimit-requests-limit"]) > 0
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text  # type: ignore[union-attr]
    assert message.stop_reason in ("end_turn", "max_tokens") and message.stop_sequence is None
    usage = message.usage
    assert usage.input_tokens > 5 and 0 < usage.output_tokens <= 8
    assert usage.cache_read_input_tokens is not None and usage.cache_creation_input_tokens == 0
    meta = message.model_extra["meta"]["usage"]  # type: ignore[index]
    assert meta["credits_used"] > 0
    assert meta["usd_spent"] == pytest.approx(meta["credits_used"] / 2_000_000)


def test_input_tokens_exclude_the_cached_prompt(messages: anthropic.Anthropic) -> None:
    # Long enough for whole prefill chunks to be reused by the second, identical request.
    system = "You are a careful assistant. " * 12
    ask: dict[str, Any] = {"model": MODEL, "max_tokens": 2, "system": system, "messages": HELLO}
    prompt = messages.messages.count_tokens(model=MODEL, system=system, messages=HELLO).input_tokens
    messages.messages.create(**ask)
    again = messages.messages.create(**ask).usage
    assert again.cache_read_input_tokens and again.cache_read_input_tokens >= 64
    assert again.input_tokens + again.cache_read_input_tokens + (again.cache_creation_input_tokens or 0) == prompt


def test_same_conversation_same_seed_same_text_as_chat_completions(
    messages: anthropic.Anthropic, client: openai.OpenAI
) -> None:
    system = "You are terse."
    turns: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a colour."},
    ]
    message = messages.messages.create(model=MODEL, max_tokens=10, system=system, messages=turns, extra_body=SEEDED)
    chat = client.chat.completions.create(
        model=MODEL,
        max_tokens=10,
        messages=[{"role": "system", "content": system}, *turns],
        temperature=SEEDED["temperature"],
        top_p=SEEDED["top_p"],
        seed=SEEDED["seed"],
        extra_body={"top_k": SEEDED["top_k"]},
    )
    text = "".join(block.text for block in message.content if block.type == "text")
    assert text and text == chat.choices[0].message.content
    assert chat.usage is not None
    usage = message.usage
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) == chat.usage.prompt_tokens
    assert usage.output_tokens == chat.usage.completion_tokens


def test_system_as_string_or_blocks_is_the_same_prompt(messages: anthropic.Anthropic) -> None:
    as_string = messages.messages.create(
        model=MODEL, max_tokens=6, system="Answer in French.", messages=HELLO, extra_body=SEEDED
    )
    as_blocks = messages.messages.create(
        model=MODEL,
        max_tokens=6,
        system=[{"type": "text", "text": "Answer in French."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": HELLO[0]["content"]}]}],
        extra_body=SEEDED,
    )
    assert blocks(as_string.content) == blocks(as_blocks.content)
    counted = [
        messages.messages.count_tokens(model=MODEL, messages=HELLO, **system).input_tokens  # type: ignore[arg-type]
        for system in ({"system": "Answer in French."}, {"system": [{"type": "text", "text": "Answer in French."}]}, {})
    ]
    assert counted[0] == counted[1] != counted[2]


def test_multi_turn_prompt_grows_with_the_conversation(messages: anthropic.Anthropic) -> None:
    turns: list[Any] = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    message = messages.messages.create(model=MODEL, max_tokens=6, messages=turns)
    assert message.content and message.stop_reason in ("end_turn", "max_tokens")
    single = messages.messages.count_tokens(model=MODEL, messages=turns[-1:]).input_tokens
    whole = message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    assert whole > single


def test_max_tokens_gives_max_tokens(messages: anthropic.Anthropic) -> None:
    message = messages.messages.create(
        model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "Write a long story about a dragon."}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 4


def test_stop_sequence_is_reported(messages: anthropic.Anthropic) -> None:
    message = messages.messages.create(
        model=MODEL,
        max_tokens=40,
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        stop_sequences=["5"],
        extra_body={"temperature": 0},
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "5"
    text = message.content[0].text  # type: ignore[union-attr]
    assert "5" not in text and "4" in text


def test_streaming_reassembled_by_the_sdk_matches_the_plain_answer(messages: anthropic.Anthropic) -> None:
    kinds: list[str] = []
    deltas: list[str] = []
    with messages.messages.stream(model=MODEL, max_tokens=8, messages=HELLO, extra_body=SEEDED) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                deltas.append(event.delta.text)
            if event.type == "message_delta":
                cost = event.model_extra["meta"]["usage"]  # type: ignore[index]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == "".join(deltas)  # type: ignore[union-attr]
    assert final.stop_reason in ("end_turn", "max_tokens") and 0 < final.usage.output_tokens <= 8
    assert cost["credits_used"] > 0
    plain = messages.messages.create(model=MODEL, max_tokens=8, messages=HELLO, extra_body=SEEDED)
    assert blocks(plain.content) == blocks(final.content)
    assert plain.usage.output_tokens == final.usage.output_tokens


def test_count_tokens_matches_what_a_request_is_billed(messages: anthropic.Anthropic) -> None:
    turns: list[Any] = [{"role": "user", "content": "What is 2 + 2? Reply with one digit."}]
    counted = messages.messages.count_tokens(model=MODEL, system="Be brief.", messages=turns)
    answer = messages.messages.create(model=MODEL, max_tokens=2, system="Be brief.", messages=turns)
    usage = answer.usage
    assert counted.input_tokens == usage.input_tokens + (usage.cache_read_input_tokens or 0)


# ------------------------------------------------------------------------------------------------
# Auth and errors


def test_bearer_token_and_paths_without_v1(gateway: Gateway) -> None:
    bearer = anthropic.Anthropic(base_url=gateway.url, auth_token=gateway.api_key, max_retries=0, timeout=600)
    assert bearer.messages.create(model=MODEL, max_tokens=1, messages=HELLO).usage.output_tokens == 1
    headers = {"x-api-key": gateway.api_key or "", "anthropic-version": "2023-06-01"}
    plain = httpx.post(
        f"{gateway.url}/messages",
        json={"model": MODEL, "max_tokens": 1, "messages": HELLO},
        headers=headers,
        timeout=600,
    )
    assert plain.status_code == 200 and plain.json()["type"] == "message"
    counted = httpx.post(
        f"{gateway.url}/messages/count_tokens", json={"model": MODEL, "messages": HELLO}, headers=headers, timeout=600
    )
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0


def _error(raised: pytest.ExceptionInfo[anthropic.APIStatusError], kind: str) -> str:
    body = raised.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == kind and raised.value.type == kind
    assert raised.value.request_id and body["request_id"] == raised.value.request_id
    return str(body["error"]["message"])


def test_wrong_or_missing_key_is_authentication_error(gateway: Gateway) -> None:
    wrong = anthropic.Anthropic(base_url=gateway.url, api_key="gw-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        wrong.messages.create(model=MODEL, max_tokens=1, messages=HELLO)
    assert raised.value.status_code == 401
    _error(raised, "authentication_error")
    body = {"model": MODEL, "max_tokens": 1, "messages": HELLO}
    missing = httpx.post(f"{gateway.url}/v1/messages", json=body, timeout=600)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"


def test_management_key_is_permission_error(gateway: Gateway) -> None:
    manager = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.management_key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        manager.messages.create(model=MODEL, max_tokens=1, messages=HELLO)
    assert raised.value.status_code == 403
    assert "API key" in _error(raised, "permission_error")


def test_unknown_model_is_not_found_error(messages: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        messages.messages.create(model="claude-no-such-model", max_tokens=1, messages=HELLO)
    assert "claude-no-such-model" in _error(raised, "not_found_error")
    with pytest.raises(anthropic.NotFoundError):
        messages.messages.count_tokens(model="claude-no-such-model", messages=HELLO)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"extra_body": {"temperature": 1.5}}, "temperature"),
        ({"extra_body": {"top_k": -1}}, "top_k"),
        ({"stop_sequences": [""]}, "stop_sequences"),
        ({"messages": [{"role": "system", "content": "hi"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        ({"tools": [{"name": "f", "input_schema": {"type": "object"}}] * 2}, "tools"),
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ],
)
def test_bad_parameters_are_invalid_request_errors_naming_the_field(
    messages: anthropic.Anthropic, kwargs: dict[str, Any], named: str
) -> None:
    args: dict[str, Any] = {"model": MODEL, "max_tokens": 4, "messages": HELLO, **kwargs}
    with pytest.raises(anthropic.BadRequestError) as raised:
        messages.messages.create(**args)
    assert raised.value.status_code == 400
    assert named in _error(raised, "invalid_request_error")


def test_image_is_refused_for_a_model_without_vision(messages: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        messages.messages.create(
            model=MODEL,
            max_tokens=4,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                        },
                    ],
                }
            ],
        )
    assert "vision" in _error(raised, "invalid_request_error")


def test_thinking_is_refused_by_a_model_that_cannot_reason(messages: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        messages.messages.create(
            model=MODEL, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024}, messages=HELLO
        )
    assert "does not reason" in _error(raised, "invalid_request_error")


def test_prompt_over_the_context_window(messages: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        messages.messages.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "word " * 9000}])
    assert "8192" in _error(raised, "invalid_request_error")
