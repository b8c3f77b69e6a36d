"""The task API on the real embedded model, driven by the official ``runware-sdk`` (REST transport,
``http_base_url`` pointed at the gateway): sync, async with getResponse polling, and streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from runware import Runware
from runware.errors import RunwareError

from tests.conftest import MODEL
from tests.support.procs import Gateway

PROMPT = [{"role": "user", "content": "Say hello in three words."}]


@pytest.fixture
async def sdk(gateway: Gateway) -> AsyncIterator[Runware]:
    client = Runware(api_key=gateway.api_key, transport="rest", http_base_url=f"{gateway.url}/v1", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


def task(**fields: object) -> dict[str, object]:
    return {
        "taskType": "textInference",
        "model": MODEL,
        "messages": PROMPT,
        "settings": {"maxTokens": 6},
        "includeCost": True,
        "includeUsage": True,
        **fields,
    }


def check_result(result: dict[str, object], max_tokens: int = 6) -> None:
    assert result["taskType"] == "textInference"
    assert isinstance(result["text"], str) and result["text"]
    assert result["finishReason"] in ("stop", "length")
    usage = result["usage"]
    assert isinstance(usage, dict)
    assert usage["promptTokens"] > 5 and 0 < usage["completionTokens"] <= max_tokens
    assert usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"]
    assert usage["thinkingTokens"] == 0
    assert isinstance(result["cost"], float) and result["cost"] > 0


async def test_sync_run(sdk: Runware) -> None:
    results = await sdk.run(task(deliveryMethod="sync", seed=3))
    assert len(results) == 1
    check_result(results[0])
    assert results[0]["seed"] == 3 and results[0]["resultIndex"] == 0


async def test_async_run_polls_until_done(sdk: Runware) -> None:
    progress: list[dict[str, object]] = []
    # No deliveryMethod: the SDK's own default is async with getResponse polling.
    results = await sdk.run(task(seed=5))
    assert len(results) == 1
    check_result(results[0])
    assert results[0]["status"] == "success" and not progress


async def test_async_run_with_two_results(sdk: Runware) -> None:
    results = await sdk.run(task(numberResults=2, seed=11, settings={"maxTokens": 4}))
    assert [r["resultIndex"] for r in results] == [0, 1]
    assert [r["seed"] for r in results] == [11, 12]
    for result in results:
        check_result(result, 4)


async def test_stream_text_and_final_result(sdk: Runware) -> None:
    stream = await sdk.stream(task(seed=9))
    pieces = [piece async for piece in stream.text_stream]
    result = await stream.result()
    assert len(pieces) >= 2 and "".join(pieces) == result.text
    assert result.finish_reason in ("stop", "length")
    assert result.usage is not None and 0 < result.usage["completionTokens"] <= 6
    assert result.cost is not None and result.cost > 0


async def test_stream_matches_sync_for_the_same_seed(sdk: Runware) -> None:
    stream = await sdk.stream(task(seed=21))
    streamed = await stream.text()
    synced = await sdk.run(task(seed=21, deliveryMethod="sync"))
    assert streamed == synced[0]["text"]


async def test_sdk_raises_validation_errors_with_parameter(sdk: Runware) -> None:
    with pytest.raises(RunwareError) as raised:
        await sdk.run(task(deliveryMethod="sync", settings={"maxTokens": 6, "temperature": 1.5}))
    assert raised.value.code == "validation"
    assert raised.value.parameter == "settings.temperature"
    assert raised.value.status_code == 400


async def test_sdk_unknown_model_is_not_found(sdk: Runware) -> None:
    with pytest.raises(RunwareError) as raised:
        await sdk.run(task(deliveryMethod="sync", model="nobody:nothing@1"))
    assert raised.value.code == "notFound"
    assert raised.value.parameter == "model"


async def test_sdk_bad_key_is_auth(gateway: Gateway) -> None:
    client = Runware(api_key="0" * 32, transport="rest", http_base_url=f"{gateway.url}/v1", max_retries=0)
    try:
        with pytest.raises(RunwareError) as raised:
            await client.run(task(deliveryMethod="sync"))
    finally:
        await client.close()
    assert raised.value.code == "auth" and raised.value.status_code == 401
