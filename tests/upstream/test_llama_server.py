"""A real OpenAI-compatible server as the upstream: ``llama_cpp.server`` serving the local GGUF on
loopback, behind a real gateway process with keys and billing on, driven by the official openai SDK.

Generation here is slow (one thread, shared cores), so every request is short: a few prompt words
and a handful of output tokens; the error cases never reach generation."""

from __future__ import annotations

import re

import httpx
import openai
import orjson
import pytest

from gatewright.core.billing import price
from gatewright.core.catalog import Prices
from gatewright.core.types import Usage
from tests.support.framework import agent_turn, forced_call_from_stream
from tests.support.procs import Gateway
from tests.upstream.conftest import LLAMA_PRICES, Store

HELLO = [{"role": "user", "content": "Say hello in three words."}]
OUR_COMPLETION_ID = re.compile(r"^chatcmpl-[0-9a-f]{24}$")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def billed(usage: Usage) -> int:
    return price(usage, Prices(**LLAMA_PRICES)).credits


def test_non_streaming_is_the_upstreams_whole_answer_billed_by_its_own_counts(
    llama_client: openai.OpenAI, llama_server: str, llama_store: Store
) -> None:
    before = llama_store.balance()
    raw = llama_client.chat.completions.with_raw_response.create(
        model="served-qwen", messages=HELLO, max_tokens=6, seed=1, temperature=0
    )
    completion = raw.parse()
    assert OUR_COMPLETION_ID.match(completion.id)  # our id, not the upstream's
    assert completion.model == "served-qwen" and raw.headers["x-gatewright-deployment"] == "served-qwen"
    assert completion.choices[0].finish_reason in ("stop", "length")
    # The same request straight at the upstream: the gateway asked for the whole answer, and passes
    # on the server's text and the server's own counts (which its stream does not report).
    direct = httpx.post(
        f"{llama_server}/v1/chat/completions",
        json={"model": "x", "messages": HELLO, "max_tokens": 6, "seed": 1, "temperature": 0},
        timeout=120,
    ).json()
    assert completion.choices[0].message.content == direct["choices"][0]["message"]["content"]
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        direct["usage"]["prompt_tokens"],
        direct["usage"]["completion_tokens"],
    )
    record = llama_store.usage(raw.headers["x-request-id"])
    assert not record["estimated"] and "x-gatewright-usage" not in raw.headers
    expected = billed(Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens))
    assert record["credits"] == expected == completion.model_extra["meta"]["usage"]["credits_used"]
    assert llama_store.balance() == before - expected


def test_streaming_is_reframed_with_our_usage_chunk_marked_estimated(
    llama_client: openai.OpenAI, llama_store: Store
) -> None:
    raw = llama_client.chat.completions.with_raw_response.create(
        model="served", messages=HELLO, max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    assert {c.id for c in chunks} == {chunks[0].id} and OUR_COMPLETION_ID.match(chunks[0].id)
    assert {c.model for c in chunks} == {"served-qwen"}
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    # llama_cpp.server ignores include_usage: the counts are the gateway's, and say so.
    assert usage_chunk.usage.completion_tokens >= len(pieces) and usage_chunk.usage.prompt_tokens > 0
    meta = usage_chunk.model_extra["meta"]["usage"]
    assert meta["estimated"] is True
    record = llama_store.usage(raw.headers["x-request-id"])
    assert record["estimated"] and record["credits"] == meta["credits_used"] > 0


def test_streamed_tool_call_assembles_in_the_sdk(llama_client: openai.OpenAI) -> None:
    # llama_cpp.server repeats id, type and name on every fragment; the SDK's stream helper
    # concatenates whatever it is sent, so a wrong re-framing shows up as a mangled call.
    with llama_client.chat.completions.stream(
        model="served-qwen",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=24,
        temperature=0,
    ) as stream:
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        final = stream.get_final_completion()
    fragments = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert fragments[0].id and fragments[0].function and fragments[0].function.name == "get_weather"
    assert all(f.id is None and f.index == 0 for f in fragments[1:])  # id and name once, then arguments
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    assert calls[0].function.name == "get_weather" and calls[0].id == fragments[0].id
    arguments = orjson.loads(calls[0].function.arguments)
    assert isinstance(arguments, dict) and isinstance(arguments.get("city"), str)


def test_upstream_refusal_inside_its_stream_fails_cleanly_and_costs_nothing(
    llama_client: openai.OpenAI, llama_store: Store
) -> None:
    # Our estimate fits the catalog's (wrong) 32k window; the server's 2048-token context does not.
    # Streaming, llama_cpp.server checks that only once it streams: it answers 200, logs the error
    # and closes the stream empty. The gateway must not pass that off as an answer: the caller gets
    # a 502 that says so, and pays nothing.
    long_prompt = [{"role": "user", "content": "word " * 2500}]
    before = llama_store.balance()
    with pytest.raises(openai.APIError) as streamed:
        stream = llama_client.chat.completions.create(
            model="served-qwen-wide", messages=long_prompt, max_tokens=4, stream=True
        )
        list(stream)
    assert "ended its stream before the answer finished" in streamed.value.message
    # Asked for a whole answer, the server says what is wrong: the caller's 400, with its words.
    with pytest.raises(openai.BadRequestError) as whole:
        llama_client.chat.completions.create(model="served-qwen-wide", messages=long_prompt, max_tokens=4)
    assert "maximum context length is 2048 tokens" in whole.value.message
    record = llama_store.usage(whole.value.response.headers["x-request-id"])
    assert (record["status"], record["credits"]) == ("error", 0)
    assert llama_store.balance() == before


def test_upstream_500_becomes_a_502_with_the_upstream_message(llama_client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        llama_client.chat.completions.create(
            model="served-qwen-schema",
            messages=HELLO,
            max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        )
    assert caught.value.status_code == 502
    assert "Input should be 'text' or 'json_object'" in caught.value.message


def test_gateway_health_lists_the_served_models(llama_gateway: Gateway) -> None:
    health = httpx.get(f"{llama_gateway.url}/health").json()
    assert health["models"] == {
        "served-qwen": "active",
        "served-qwen-wide": "active",
        "served-qwen-schema": "active",
    }


def test_agent_framework_turn_through_a_real_openai_compatible_server(llama_client: openai.OpenAI) -> None:
    chunks = list(llama_client.chat.completions.create(**agent_turn("served-qwen", stream=True, max_tokens=24)))
    call = forced_call_from_stream(chunks)
    assert call["arguments"]  # the server's own call (llama_cpp.server does not constrain it)
