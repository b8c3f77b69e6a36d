"""The task API on the real embedded model, driven by the official ``runware-sdk`` (REST transport,
``http_base_url`` pointed at the gateway): sync, async with getResponse polling, and streaming."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from runware import Runware
from runware.errors import RunwareError

from tests.conftest import MODEL
from tests.support.procs import Gateway

PROMPT = [{"role": "user", "content": "Say hello in three words."}]


def client_for(gateway: Gateway, key: str | None = None) -> Runware:
    return Runware(api_key=key or gateway.api_key, transport="rest", http_base_url=f"{gateway.url}/v1", max_retries=0)


@pytest.fixture
async def sdk(gateway: Gateway) -> AsyncIterator[Runware]:
    client = client_for(gateway)
    try:
        yield client
    finally:
        await client.close()


def task(**fields: Any) -> dict[str, Any]:
    return {
        "taskType": "textInference",
        "model": MODEL,
        "messages": PROMPT,
        "settings": {"maxTokens": 6},
        "includeCost": True,
        "includeUsage": True,
        **fields,
    }


def check_result(result: dict[str, Any], max_tokens: int) -> None:
    assert result["taskType"] == "textInference" and result["status"] == "success"
    assert isinstance(result["text"], str) and result["text"]
    assert result["finishReason"] in ("stop", "length")
    usage = result["usage"]
    assert usage["promptTokens"] > 5 and 0 < usage["completionTokens"] <= max_tokens
    assert usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"]
    assert usage["thinkingTokens"] == 0
    assert isinstance(result["cost"], float) and result["cost"] > 0


async def test_sync_then_stream_of_the_same_seed(sdk: Runware) -> None:
    (synced,) = await sdk.run(task(deliveryMethod="sync", seed=3))
    check_result(synced, 6)
    assert synced["seed"] == 3 and synced["resultIndex"] == 0

    stream = await sdk.stream(task(seed=3))
    pieces = [piece async for piece in stream.text_stream]
    result = await stream.result()
    assert len(pieces) >= 2 and "".join(pieces) == result.text == synced["text"]
    assert result.finish_reason == synced["finishReason"]
    assert result.usage is not None and result.usage["completionTokens"] == synced["usage"]["completionTokens"]
    assert result.cost is not None and result.cost > 0


async def test_async_default_polls_every_result(sdk: Runware) -> None:
    # No deliveryMethod: the SDK's own default is async, then getResponse polling.
    results = await sdk.run(task(numberResults=2, seed=11, settings={"maxTokens": 4}))
    assert [r["resultIndex"] for r in results] == [0, 1]
    assert [r["seed"] for r in results] == [11, 12]
    for result in results:
        check_result(result, 4)


async def test_tool_call_on_the_embedded_model(sdk: Runware) -> None:
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "Get the weather of a city.",
        "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    forced = task(
        deliveryMethod="sync",
        messages=[{"role": "user", "content": "What is the weather in Tokyo?"}],
        tools=[weather],
        toolChoice={"type": "tool", "name": "get_weather"},
        settings={"maxTokens": 40},
    )
    (result,) = await sdk.run(forced)
    assert result["finishReason"] == "tool_calls"
    (call,) = result["tools"]
    assert call["name"] == "get_weather" and isinstance(call["input"]["city"], str) and call["id"]
    assert set(result["usage"]) == {"promptTokens", "completionTokens", "totalTokens", "thinkingTokens"}


async def test_sdk_raises_validation_errors_with_their_parameter(sdk: Runware) -> None:
    with pytest.raises(RunwareError) as raised:
        await sdk.run(task(deliveryMethod="sync", settings={"maxTokens": 6, "temperature": 1.5}))
    assert (raised.value.code, raised.value.parameter, raised.value.status_code) == (
        "validation",
        "settings.temperature",
        400,
    )


async def test_sdk_unknown_model_is_not_found(sdk: Runware) -> None:
    with pytest.raises(RunwareError) as raised:
        await sdk.run(task(deliveryMethod="sync", model="nobody:nothing@1"))
    assert (raised.value.code, raised.value.parameter) == ("notFound", "model")


async def test_sdk_bad_key_is_auth(gateway: Gateway) -> None:
    client = client_for(gateway, key="0" * 32)
    try:
        with pytest.raises(RunwareError) as raised:
            await client.run(task(deliveryMethod="sync"))
    finally:
        await client.close()
    assert (raised.value.code, raised.value.status_code) == ("auth", 401)


@pytest.mark.skipif(bool(os.environ.get("ZAI_API_KEY")), reason="with a Z.ai key the model is active")
async def test_air_model_id_resolves_through_the_catalog(sdk: Runware) -> None:
    # The SDK sends AIR ids as they are; `zai:glm@5.1` is the GLM-5.1 entry's alias, inactive here.
    with pytest.raises(RunwareError) as raised:
        await sdk.run(task(deliveryMethod="sync", model="zai:glm@5.1"))
    assert (raised.value.code, raised.value.parameter, raised.value.status_code) == ("validation", "model", 400)
    assert "ZAI_API_KEY" in str(raised.value)
