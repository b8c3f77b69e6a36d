"""One gatewright process as the Anthropic-style upstream of another: gateway A's ``anthropic``
backend speaks Messages to gateway B's real ``/v1/messages``. Behind B: the deterministic fake
backend, the scripted loopback upstream (to see what arrives after two translations), and the real
model through ``llama_cpp.server``. Driven with the official openai SDK against A."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from gatewright.core.billing import price
from gatewright.core.catalog import Prices
from gatewright.core.types import Usage
from tests.support.faulty_upstream import Answer, FaultyUpstream
from tests.support.procs import Gateway, running_gateway
from tests.upstream.conftest import PRICES, Store, catalog_toml

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
PARIS_CALL = {"name": "get_weather", "arguments": '{"city":"Paris"}'}


@pytest.fixture(scope="module")
def gateway_b(tmp_path_factory: pytest.TempPathFactory, faulty: FaultyUpstream, llama_server: str) -> Iterator[Gateway]:
    def entry(model_id: str, **fields: Any) -> dict[str, Any]:
        return {"id": model_id, "context_window": 8192, "max_output": 4096, "prices": PRICES, **fields}

    models = [
        entry("echo", backend="fake", capabilities={"tools": True}),
        entry(
            "relay",
            backend="openai",
            base_url=faulty.base_url("b-relay"),
            upstream_model="relay-upstream",
            capabilities={"tools": True, "reasoning": True},
        ),
        entry("served-qwen", backend="openai", base_url=f"{llama_server}/v1", context_window=2048, max_output=256),
    ]
    data_dir = tmp_path_factory.mktemp("gateway-b")
    (data_dir / "catalog.toml").write_text(catalog_toml(models))
    with running_gateway(data_dir, catalog=data_dir / "catalog.toml") as gw:
        assert gw.api_key, gw.log()
        yield gw


@pytest.fixture(scope="module")
def gateway_a(tmp_path_factory: pytest.TempPathFactory, gateway_b: Gateway) -> Iterator[Gateway]:
    def via(model_id: str, upstream: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": model_id,
            "context_window": 8192,
            "max_output": 4096,
            "prices": PRICES,
            "capabilities": {"tools": True, "reasoning": True},
            "backend": "anthropic",
            "base_url": f"{gateway_b.url}/v1",
            "upstream_model": upstream,
            "api_key_env": "GW_TEST_GATEWAY_B_KEY",
            "max_retries": 0,
            **fields,
        }

    models = [
        via("via-echo", "echo"),
        via("via-relay", "relay"),
        via("via-qwen", "served-qwen", context_window=2048, max_output=256),
        via("via-missing", "no-such-model"),
    ]
    data_dir = tmp_path_factory.mktemp("gateway-a")
    (data_dir / "catalog.toml").write_text(catalog_toml(models))
    env = {"GW_TEST_GATEWAY_B_KEY": gateway_b.api_key or ""}
    with running_gateway(data_dir, catalog=data_dir / "catalog.toml", env=env) as gw:
        assert gw.api_key, gw.log()
        yield gw


@pytest.fixture(scope="module")
def client_a(gateway_a: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_a.url}/v1", api_key=gateway_a.api_key, max_retries=0, timeout=300)


def test_text_streams_through_messages_with_exact_usage(client_a: openai.OpenAI, gateway_a: Gateway) -> None:
    raw = client_a.chat.completions.with_raw_response.create(
        model="via-echo",
        messages=[{"role": "user", "content": "alpha beta gamma"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "alpha beta gamma"  # B's fake echoes, word by word, through B's Messages stream
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 3
    meta = chunks[-1].model_extra["meta"]["usage"]
    assert "estimated" not in meta  # B reported usage in message_start / message_delta
    record = Store(gateway_a.data_dir / "gatewright.db").usage(raw.headers["x-request-id"])
    expected = price(Usage(input_tokens=usage.prompt_tokens, output_tokens=3), Prices(**PRICES)).credits
    assert record["credits"] == expected == meta["credits_used"]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_crosses_both_gateways(client_a: openai.OpenAI, stream: bool) -> None:
    messages: Any = [{"role": "user", "content": "Paris weather"}]
    if stream:
        with client_a.chat.completions.stream(
            model="via-echo", messages=messages, tools=[WEATHER_TOOL], tool_choice=NAMED
        ) as events:
            completion = events.get_final_completion()
    else:
        completion = client_a.chat.completions.create(
            model="via-echo", messages=messages, tools=[WEATHER_TOOL], tool_choice=NAMED
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert orjson.loads(calls[0].function.arguments) == {"echo": "Paris weather"}


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_round_trip(client_a: openai.OpenAI, faulty: FaultyUpstream, stream: bool) -> None:
    faulty.script("b-relay", Answer("42", reasoning="six times seven", prompt_tokens=9))
    kwargs: Any = {"model": "via-relay", "messages": [{"role": "user", "content": "6*7?"}], "max_tokens": 2000}
    if stream:
        chunks = list(client_a.chat.completions.create(stream=True, reasoning_effort="low", **kwargs))
        deltas: list[Any] = [c.choices[0].delta for c in chunks if c.choices]
        reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
        text = "".join(d.content or "" for d in deltas)
    else:
        message = client_a.chat.completions.create(reasoning_effort="low", **kwargs).choices[0].message
        reasoning, text = (message.model_extra or {}).get("reasoning_content"), message.content
    assert (reasoning, text) == ("six times seven", "42")
    # A asked B for thinking with Anthropic's budget; B asked its OpenAI-style upstream to reason.
    assert faulty.seen("b-relay")[-1].body["reasoning_effort"] in ("low", "medium", "high")


def test_tool_history_survives_two_translations(client_a: openai.OpenAI, faulty: FaultyUpstream) -> None:
    faulty.script("b-relay", Answer("It is sunny."))
    history: Any = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": PARIS_CALL}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    completion = client_a.chat.completions.create(model="via-relay", messages=history, tools=[WEATHER_TOOL])
    assert completion.choices[0].message.content == "It is sunny."
    arrived = faulty.seen("b-relay")[-1].body["messages"]
    assert arrived[0] == {"role": "system", "content": "Be brief."}
    assert arrived[1] == {"role": "user", "content": "Weather in Paris?"}
    call = arrived[2]["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == ("call_1", "get_weather")
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert arrived[3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_errors_of_the_upstream_gateway_keep_their_message(client_a: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client_a.chat.completions.create(model="via-missing", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502 and "no-such-model" in caught.value.message
    with pytest.raises(openai.BadRequestError) as rejected:
        client_a.chat.completions.create(
            model="via-echo", messages=[{"role": "user", "content": "hi"}], temperature=1.5
        )
    assert "temperature" in rejected.value.message  # B's Messages API allows 0..1; its words come through


def test_real_model_through_two_gateways(client_a: openai.OpenAI, gateway_a: Gateway, gateway_b: Gateway) -> None:
    raw = client_a.chat.completions.with_raw_response.create(
        model="via-qwen", messages=[{"role": "user", "content": "Say hi."}], max_tokens=5, temperature=0
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    usage = completion.usage
    assert usage is not None and 0 < usage.completion_tokens <= 5
    a_record = Store(gateway_a.data_dir / "gatewright.db").usage(raw.headers["x-request-id"])
    assert not a_record["estimated"]
    b_rows = Store(gateway_b.data_dir / "gatewright.db")._query(
        "SELECT input_tokens, output_tokens FROM usage_records WHERE model = 'served-qwen'"
    )
    # The counts A billed are the ones B billed: llama_cpp.server's own, carried through Messages.
    assert [(r["input_tokens"], r["output_tokens"]) for r in b_rows] == [(usage.prompt_tokens, usage.completion_tokens)]
