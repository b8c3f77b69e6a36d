"""OpenAI Chat Completions against a live gateway and the real embedded model, through the
official `openai` SDK."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import MODEL
from tests.support.procs import Gateway

HELLO = [{"role": "user", "content": "Say hello in three words."}]


def test_non_streaming_shape_and_usage(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, seed=1)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content and choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 5 and 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens is not None
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 0
    meta = completion.model_extra["meta"]["usage"]  # type: ignore[index]
    assert meta["credits_used"] > 0
    assert meta["usd_spent"] == pytest.approx(meta["credits_used"] / 2_000_000)


def test_alias_and_route_without_v1(gateway: Gateway) -> None:
    bare = openai.OpenAI(base_url=gateway.url, api_key=gateway.api_key, max_retries=0)
    completion = bare.chat.completions.create(model="local", messages=HELLO, max_tokens=3)
    assert completion.model == MODEL  # the alias resolves to the canonical id


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long story about a dragon."}], max_tokens=4
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 4


def test_max_completion_tokens_is_honoured(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "List ten fruits."}], max_completion_tokens=3
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_seed_gives_same_output(client: openai.OpenAI) -> None:
    kwargs = dict(
        model=MODEL, messages=[{"role": "user", "content": "Name a color."}], max_tokens=10, temperature=1.0, seed=1234
    )
    first = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    second = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    assert first.choices[0].message.content == second.choices[0].message.content


def test_stop_sequence_ends_with_stop(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        max_tokens=40,
        temperature=0,
        stop=["5"],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert "5" not in (choice.message.content or "")
    assert "4" in (choice.message.content or "")


def test_n_choices_each_complete(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, n=3, seed=7)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.message.content for c in completion.choices)
    assert completion.usage is not None and completion.usage.completion_tokens <= 18


def test_logprobs_are_real_and_consistent(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=5, logprobs=True, top_logprobs=3, temperature=0
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == completion.choices[0].message.content
    for item in logprobs.content:
        assert item.logprob <= 0
        assert bytes(item.bytes or []).decode() == item.token
        assert len(item.top_logprobs) == 3
        assert [t.logprob for t in item.top_logprobs] == sorted((t.logprob for t in item.top_logprobs), reverse=True)
        # Greedy decoding picks the most likely token.
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)


def test_streaming_with_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, stream=True, stream_options={"include_usage": True}, seed=3
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id == chunks[0].id for c in chunks)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert usage_chunk.usage.completion_tokens >= 1
    assert usage_chunk.model_extra["meta"]["usage"]["credits_used"] > 0  # type: ignore[index]
    same = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, seed=3)
    assert same.choices[0].message.content == text


def test_streaming_n_interleaves_by_index(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4, n=2, stream=True)
    seen: dict[int, list[str]] = {0: [], 1: []}
    roles = set()
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.role:
                roles.add(choice.index)
            seen[choice.index].append(choice.delta.content or "")
    assert roles == {0, 1}
    assert "".join(seen[0]) and "".join(seen[1])


def test_stream_helper_accumulates(client: openai.OpenAI) -> None:
    # The SDK's helper refuses a completion cut by max_tokens, so ask for something short, greedily.
    messages = [{"role": "user", "content": "Reply with the single word: OK"}]
    with client.chat.completions.stream(model=MODEL, messages=messages, max_tokens=16, temperature=0) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"top_logprobs": 30, "logprobs": True}, "top_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ],
)
def test_invalid_parameters_are_400_with_param(client: openai.OpenAI, kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO, **kwargs)  # type: ignore[call-overload]
    assert raised.value.status_code == 400
    body = raised.value.body
    assert isinstance(body, dict) and body["param"] == param and body["type"] == "invalid_request_error"


def test_bad_messages_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "hi"}])  # type: ignore[list-item]
    assert raised.value.body["param"].startswith("messages")  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])


def test_image_refused_for_model_without_vision(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    ],
                }
            ],
        )
    assert "vision" in raised.value.message
    assert raised.value.body["param"] == "messages[0].content"  # type: ignore[index]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert raised.value.code == "model_not_found"


def test_inactive_model_names_its_variable(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="zhipu/glm-5-1", messages=HELLO)
    assert "ZAI_API_KEY" in raised.value.message


def test_prompt_over_context_window(client: openai.OpenAI) -> None:
    huge = "word " * 9000
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": huge}])
    assert raised.value.code == "context_length_exceeded"
    assert "8192" in raised.value.message and "tokens" in raised.value.message


def test_all_roles_round_trip(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        max_tokens=4,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in one word."}]},
            {"role": "user", "content": "Hi", "name": "ann"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "nothing found"},
            {"role": "user", "content": [{"type": "text", "text": "Bye"}]},
        ],
    )
    assert completion.choices[0].message.content is not None


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert MODEL in ids and "zhipu/glm-5-1" in ids
    local = next(m for m in models.data if m.id == MODEL)
    assert local.model_extra["context_window"] == 8192  # type: ignore[index]
    assert local.model_extra["capabilities"]["vision"] is False  # type: ignore[index]
