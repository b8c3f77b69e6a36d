"""The benchmark's mock upstream speaks OpenAI's wire format: checked with the official SDK, raw HTTP
for the fault hooks, and through a real bare gateway using the catalog the benchmark uses."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from bench import procs
from bench.mock_upstream import pieces
from tests.support.procs import running_gateway

HELLO = [{"role": "user", "content": "Say hello"}]
FULL_TEXT = "".join(pieces(16))


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_non_streaming_answer_and_usage(mock: procs.Service) -> None:
    completion = sdk(mock.url).chat.completions.create(model="anything", messages=HELLO)  # type: ignore[arg-type]
    assert completion.object == "chat.completion"
    assert completion.model == "anything"  # echoed, like real OpenAI-compatible servers
    assert completion.choices[0].message.content == FULL_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 16)


def test_max_tokens_cuts_the_answer(mock: procs.Service) -> None:
    completion = sdk(mock.url).chat.completions.create(model="m", messages=HELLO, max_tokens=3)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "".join(pieces(3))
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_stream_sends_one_chunk_per_token_and_usage_when_asked(mock: procs.Service) -> None:
    stream = sdk(mock.url).chat.completions.create(
        model="m",
        messages=HELLO,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert content == pieces(16)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 16


def test_stream_without_include_usage_has_no_usage_chunk(mock: procs.Service) -> None:
    chunks = list(sdk(mock.url).chat.completions.create(model="m", messages=HELLO, stream=True))  # type: ignore[arg-type]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_fault_hooks(mock: procs.Service) -> None:
    url = mock.url + "/v1/chat/completions"
    body = {"model": "m", "messages": HELLO, "stream": True}
    refused = httpx.post(url, json=body, headers={"x-mock-status": "429", "x-mock-retry-after": "3"})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "3"
    assert refused.json()["error"]["message"] == "mock failure 429"
    short = httpx.post(url, json=body, headers={"x-mock-chunks": "2"})
    assert short.text.count('"content":"') == 3  # role chunk + 2 tokens
    with pytest.raises(httpx.RemoteProtocolError):  # the connection drops mid-stream
        httpx.post(url, json=body, headers={"x-mock-fail-after": "2"})


def test_bad_input_gets_openai_errors(mock: procs.Service) -> None:
    bad_json = httpx.post(mock.url + "/v1/chat/completions", content=b"[1")
    assert bad_json.status_code == 400 and "error" in bad_json.json()
    assert httpx.get(mock.url + "/nowhere").status_code == 404
    assert httpx.get(mock.url + "/v1/chat/completions").status_code == 405


def test_bare_gateway_in_front_of_the_mock(mock: procs.Service, tmp_path: Path) -> None:
    """The benchmark's own catalog: gatewright's openai backend relays the mock faithfully."""
    catalog = procs.mock_catalog(mock.url, tmp_path / "catalog.toml")
    with running_gateway(tmp_path / "gw", catalog=catalog, args=["--bare"]) as gateway:
        client = sdk(gateway.url)
        completion = client.chat.completions.create(model="mock", messages=HELLO, max_tokens=16)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == FULL_TEXT
        assert completion.usage is not None and completion.usage.completion_tokens == 16
        stream = client.chat.completions.create(
            model="mock",
            messages=HELLO,  # type: ignore[arg-type]
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FULL_TEXT
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 12
