"""Faults injected by the loopback upstream, seen through a real gateway process with keys and
billing on: retries, Retry-After, timeouts, resets, fallbacks, the circuit breaker, balancing, and
that no failed attempt is ever billed."""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from typing import Any

import anthropic
import openai
import pytest

from gatewright.core.billing import price
from gatewright.core.catalog import Prices
from gatewright.core.metrics import REGISTRY
from gatewright.core.types import Usage
from tests.support.anthropic_sse import anthropic_stream
from tests.support.app import AppGateway
from tests.support.faulty_upstream import Answer, Fail, FaultyUpstream, Hang, Reset, sse, stream_frames
from tests.upstream.conftest import BACKUP_PRICES, BREAKER_COOLDOWN, PRICES, UPSTREAM_KEY, Store

HI = [{"role": "user", "content": "Say hi"}]


def ask(client: openai.OpenAI, model: str, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HI, **kwargs)
    return raw.parse(), dict(raw.headers)


def credits(prompt: int, completion: int, prices: dict[str, float]) -> int:
    return price(Usage(input_tokens=prompt, output_tokens=completion), Prices(**prices)).credits


def test_5xx_is_retried_and_only_the_answer_is_billed(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    faulty.script("retry-ok", Fail(500), Fail(503), Answer("one two three four", prompt_tokens=11))
    before = fault_store.balance()
    completion, headers = ask(fault_client, "retry-ok")
    assert completion.choices[0].message.content == "one two three four"
    assert len(faulty.seen("retry-ok")) == 3
    assert headers["x-gatewright-deployment"] == "retry-ok"
    record = fault_store.usage(headers["x-request-id"])
    expected = credits(11, 4, PRICES)
    assert (record["input_tokens"], record["output_tokens"], record["status"]) == (11, 4, "ok")
    assert record["credits"] == expected == completion.model_extra["meta"]["usage"]["credits_used"]
    assert not record["estimated"]
    assert fault_store.balance() == before - expected
    assert fault_store.charges(headers["x-request-id"]) == [-expected]


def test_429_retry_after_is_honoured(fault_client: openai.OpenAI, faulty: FaultyUpstream) -> None:
    faulty.script("rate-limited", Fail(429, "slow down", retry_after="1"), Answer("ok then"))
    completion, _ = ask(fault_client, "rate-limited")
    assert completion.choices[0].message.content == "ok then"
    first, second = faulty.seen("rate-limited")[-2:]
    assert second.at - first.at >= 0.9  # waited as long as the upstream asked


def test_429_asking_too_long_a_wait_reaches_the_caller(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    faulty.forget("rate-limited")
    faulty.script("rate-limited", Fail(429, "quota exhausted for the hour", retry_after="3600"), default=Answer())
    before = fault_store.balance()
    with pytest.raises(openai.RateLimitError) as caught:
        ask(fault_client, "rate-limited")
    assert len(faulty.seen("rate-limited")) == 1  # not retried: the wait is longer than the gateway will hold
    error = caught.value
    assert "quota exhausted for the hour" in error.message
    assert error.response.headers["retry-after"] == "3600"
    assert fault_store.usage(error.response.headers["x-request-id"])["credits"] == 0
    assert fault_store.balance() == before


def test_hung_upstream_times_out_and_falls_back(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    faulty.script("hang", default=Hang(5))
    faulty.script("backup", Answer("from the backup", prompt_tokens=7))
    completion, headers = ask(fault_client, "hang")
    assert completion.choices[0].message.content == "from the backup"
    assert headers["x-gatewright-deployment"] == "backup"
    assert completion.model == "backup"  # the model that answered
    assert len(faulty.seen("hang")) == 1
    record = fault_store.usage(headers["x-request-id"])
    assert record["model"] == "backup"
    assert record["credits"] == credits(7, 3, BACKUP_PRICES)  # the fallback's prices


def test_fallback_after_retries_bills_the_fallback_only(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    faulty.forget("fails-over")
    faulty.script("fails-over", default=Fail(502, "bad gateway upstream"))
    faulty.script("backup", Answer("saved", prompt_tokens=5))
    before = fault_store.balance()
    completion, headers = ask(fault_client, "fails-over", stream=False)
    assert completion.choices[0].message.content == "saved"
    assert len(faulty.seen("fails-over")) == 2  # one attempt and one retry
    assert faulty.seen("backup")[-1].body["model"] == "backup-model"
    expected = credits(5, 1, BACKUP_PRICES)
    assert fault_store.usage(headers["x-request-id"])["credits"] == expected
    assert fault_store.balance() == before - expected


def test_every_attempt_failing_is_a_502_with_the_upstream_message_and_free(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    faulty.forget("always-fails")
    faulty.script("always-fails", default=Fail(503, "engine is warming up"))
    before = fault_store.balance()
    with pytest.raises(openai.InternalServerError) as caught:
        ask(fault_client, "always-fails")
    error = caught.value
    assert error.status_code == 502
    assert "engine is warming up" in error.message
    assert error.body["type"] == "upstream_error"  # type: ignore[index]
    assert len(faulty.seen("always-fails")) == 2
    record = fault_store.usage(error.response.headers["x-request-id"])
    assert (record["status"], record["credits"], record["output_tokens"]) == ("error", 0, 0)
    assert fault_store.balance() == before
    assert fault_store.reserved() == 0  # the hold was released


def assert_too_large_and_free(client: openai.OpenAI, store: Store) -> None:
    """The "oversized" deployment (max_answer_bytes 65,536) answers a 502 in OpenAI's format and
    bills nothing."""
    before = store.balance()
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client, "oversized")
    error = caught.value
    assert error.status_code == 502
    assert error.body["type"] == "upstream_error"  # type: ignore[index]
    assert error.body["code"] == "upstream_answer_too_large"  # type: ignore[index]
    assert "longer than 65536 bytes" in error.message
    assert store.usage(error.response.headers["x-request-id"])["credits"] == 0
    assert store.balance() == before


def test_an_answer_too_large_is_a_502_in_the_dialects_format_and_free(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    faulty.script("oversized", Fail(500, "x" * 200_000), default=Answer("small enough"))
    assert_too_large_and_free(fault_client, fault_store)
    completion, _ = ask(fault_client, "oversized")  # the next call, on a new connection, is served
    assert completion.choices[0].message.content == "small enough"


def test_a_whole_answer_too_large_is_a_502_and_free_and_a_stream_of_it_is_not_cut(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    # A caller waiting for the whole answer gets the upstream's whole answer: held in memory, so
    # bounded (65,536 bytes on this deployment).
    endless = Answer(" ".join(["w" * 40] * 2_000))  # ~82 KB as one body, 2,000 chunks as a stream
    faulty.script("oversized", endless, endless)
    assert_too_large_and_free(fault_client, fault_store)
    # Streamed on to the caller, nothing is held: the same answer passes whole.
    stream = fault_client.chat.completions.create(model="oversized", messages=HI, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == endless.text


def test_a_stream_collected_for_a_waiting_caller_is_bounded_the_same(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    # An upstream that streams although asked for a whole answer is read as a stream and collected:
    # counted as its event bytes (5,000 chunks, ~0.7 MB), against the same bound.
    frames = stream_frames(Answer(" ".join(["word"] * 5_000)), "oversized", include_usage=True)
    faulty.script("oversized", sse(b"".join(frames), pieces=50))
    assert_too_large_and_free(fault_client, fault_store)


def test_upstream_400_is_the_callers_error_with_message_and_param(
    fault_client: openai.OpenAI, faulty: FaultyUpstream
) -> None:
    faulty.forget("rejects")
    faulty.script("rejects", Fail(400, "temperature is out of range", param="temperature", code="invalid_value"))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(fault_client, "rejects")
    error = caught.value
    assert "temperature is out of range" in error.message
    assert error.param == "temperature" and error.code == "invalid_value"
    assert len(faulty.seen("rejects")) == 1  # a bad request is not retried


def test_reset_before_the_first_token_is_retried(fault_client: openai.OpenAI, faulty: FaultyUpstream) -> None:
    faulty.script("resets", Reset(after_chunks=0), Answer("after the reset"))
    stream = fault_client.chat.completions.create(model="resets", messages=HI, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "after the reset"


def test_reset_mid_stream_is_an_in_stream_error_and_free(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    faulty.script("resets", Reset(after_chunks=2), default=Answer())
    before = fault_store.balance()
    raw = fault_client.chat.completions.with_raw_response.create(
        model="resets", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["Hello", " from"]  # the two chunks sent before the reset
    assert "dropped the connection" in caught.value.message
    record = fault_store.usage(raw.headers["x-request-id"])
    assert (record["status"], record["credits"]) == ("error", 0)
    assert fault_store.balance() == before


def test_error_object_mid_stream_is_passed_on_and_free(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"model crashed while decoding","type":"server_error"}}\n\n'
    )
    faulty.script("resets", sse(body), default=Answer())
    raw = fault_client.chat.completions.with_raw_response.create(model="resets", messages=HI, stream=True)
    with pytest.raises(openai.APIError) as caught:
        for _ in raw.parse():
            pass
    assert "model crashed while decoding" in caught.value.message
    assert fault_store.usage(raw.headers["x-request-id"])["credits"] == 0


def test_circuit_breaker_skips_a_failing_deployment_then_probes_it(
    fault_client: openai.OpenAI, faulty: FaultyUpstream
) -> None:
    faulty.script("breaker-a", default=Fail(500, "a is down"))
    faulty.script("breaker-b", default=Answer("b answers"))
    # least-busy with nobody busy picks the first deployment: a, until its breaker opens.
    _, headers = ask(fault_client, "breaker")
    opened = time.monotonic()
    assert headers["x-gatewright-deployment"] == "breaker-b"
    assert len(faulty.seen("breaker-a")) == 1
    for _ in range(4):
        _, headers = ask(fault_client, "breaker")
        assert headers["x-gatewright-deployment"] == "breaker-b"
    assert len(faulty.seen("breaker-a")) == 1  # skipped while the breaker is open
    faulty.script("breaker-a", default=Answer("a is back"))
    time.sleep(max(0.0, opened + BREAKER_COOLDOWN + 0.1 - time.monotonic()))
    completion, headers = ask(fault_client, "breaker")
    assert headers["x-gatewright-deployment"] == "breaker-a"
    assert completion.choices[0].message.content == "a is back"


def test_weighted_balancing_follows_the_weights(fault_client: openai.OpenAI, faulty: FaultyUpstream) -> None:
    faulty.script("heavy", default=Answer("h"))
    faulty.script("light", default=Answer("l"))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        picks = pool.map(lambda _: ask(fault_client, "weighted")[1]["x-gatewright-deployment"], range(60))
        answered = Counter(picks)
    # Weights 3:1 pick "heavy" first with probability 3/4; 60 draws put it ahead all but ~1e-5 of the time.
    assert answered["light"] > 0 and answered["heavy"] > answered["light"]
    assert answered["heavy"] + answered["light"] == 60


def test_least_busy_spreads_concurrent_requests(fault_client: openai.OpenAI, faulty: FaultyUpstream) -> None:
    # Answers slow enough that all four requests are in flight together, even on a busy machine.
    faulty.script("busy-a", default=Answer("a", delay=3))
    faulty.script("busy-b", default=Answer("b", delay=3))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: ask(fault_client, "least-busy")[1]["x-gatewright-deployment"], range(4)))
    assert Counter(results) == {"busy-a": 2, "busy-b": 2}


def test_context_window_is_checked_before_sending(fault_client: openai.OpenAI, faulty: FaultyUpstream) -> None:
    faulty.forget("tiny-window")
    long_prompt = [{"role": "user", "content": "word " * 400}]
    with pytest.raises(openai.BadRequestError) as caught:
        fault_client.chat.completions.create(model="tiny-window", messages=long_prompt)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as caught:
        fault_client.chat.completions.create(model="tiny-window", messages=HI, max_tokens=60)
    assert caught.value.param == "max_tokens"
    assert faulty.seen("tiny-window") == []  # refused without a round trip


def test_usage_the_upstream_did_not_report_is_estimated_and_marked(
    fault_client: openai.OpenAI, faulty: FaultyUpstream, fault_store: Store
) -> None:
    faulty.script("no-usage", Answer("a fairly short answer here", prompt_tokens=None))
    completion, headers = ask(fault_client, "no-usage")
    assert headers["x-gatewright-usage"] == "estimated"
    meta = completion.model_extra["meta"]["usage"]
    assert meta["estimated"] is True and meta["credits_used"] > 0
    record = fault_store.usage(headers["x-request-id"])
    assert record["estimated"] and record["output_tokens"] > 0 and record["input_tokens"] > 0


def test_exact_usage_has_no_estimated_mark(fault_client: openai.OpenAI, faulty: FaultyUpstream) -> None:
    faulty.script("no-usage", Answer("counted", prompt_tokens=3))
    completion, headers = ask(fault_client, "no-usage")
    assert "x-gatewright-usage" not in headers
    assert "estimated" not in completion.model_extra["meta"]["usage"]


def test_upstream_key_comes_from_the_named_variable(fault_client: openai.OpenAI, faulty: FaultyUpstream) -> None:
    faulty.script("keyed", Answer())
    ask(fault_client, "keyed")
    assert faulty.seen("keyed")[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_inactive_model_names_the_variable_to_set(fault_client: openai.OpenAI, faulty: FaultyUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(fault_client, "unkeyed")
    assert caught.value.code == "model_inactive" and caught.value.param == "model"
    assert "GW_TEST_UNSET_UPSTREAM_KEY" in caught.value.message
    assert faulty.seen("unkeyed") == []


def test_anthropic_upstream_overloaded_is_retried(fault_client: openai.OpenAI, faulty: FaultyUpstream) -> None:
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": "Bonjour"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 4, "cache_read_input_tokens": 6, "output_tokens": 2},
    }
    stream = anthropic_stream(message)
    faulty.script("anthropic-flaky", Fail(529, "Overloaded"), sse(stream))
    completion, _ = ask(fault_client, "anthropic-flaky")
    assert completion.choices[0].message.content == "Bonjour"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens == 10 and usage.prompt_tokens_details.cached_tokens == 6
    _, second = faulty.seen("anthropic-flaky")
    assert second.path.endswith("/v1/messages")
    assert second.headers["x-api-key"] == UPSTREAM_KEY and second.headers["anthropic-version"] == "2023-06-01"
    assert second.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]


def test_upstream_errors_reach_an_anthropic_caller_in_its_dialect(
    fault_gateway: AppGateway, faulty: FaultyUpstream
) -> None:
    client = fault_gateway.anthropic()
    hello: Any = [{"role": "user", "content": "Say hi"}]
    faulty.script("rejects", Fail(400, "temperature is out of range"))
    with pytest.raises(anthropic.BadRequestError) as rejected:
        client.messages.create(model="rejects", max_tokens=10, messages=hello)
    assert "temperature is out of range" in rejected.value.message
    assert rejected.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    faulty.script("always-fails", default=Fail(503, "engine is warming up"))
    with pytest.raises(anthropic.APIStatusError) as failed:
        client.messages.create(model="always-fails", max_tokens=10, messages=hello)
    assert "engine is warming up" in failed.value.message
    assert failed.value.body["type"] == "error"  # type: ignore[index]


def test_a_whole_answer_is_not_timed_as_a_first_token_and_a_stream_is(
    fault_client: openai.OpenAI, faulty: FaultyUpstream
) -> None:
    # A caller who waits gets the upstream's whole answer: its first token came with its last, so
    # it is not counted as a time to first token (nor as a decoding speed); a stream's is.
    def timed() -> float:
        labels = {"gen_ai_request_model": "backup"}
        return REGISTRY.get_sample_value("gen_ai_server_time_to_first_token_seconds_count", labels) or 0.0

    faulty.script("backup", Answer("one two three"), Answer("one two three"))
    before = timed()
    completion, _ = ask(fault_client, "backup")
    assert completion.choices[0].message.content == "one two three" and timed() == before
    stream = fault_client.chat.completions.create(model="backup", messages=HI, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "one two three"
    assert timed() == before + 1
