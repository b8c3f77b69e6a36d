"""Raw HTTP checks of the OpenAI wire format, byte for byte where SDKs would be lenient."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL
from tests.support.procs import Gateway


def post(
    gateway: Gateway, body: Any, *, raw: bytes | None = None, path: str = "/v1/chat/completions"
) -> httpx.Response:
    return httpx.post(
        gateway.url + path,
        content=raw if raw is not None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {gateway.api_key}", "content-type": "application/json"},
        timeout=120,
    )


def frames(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n")
    return body[:-2].split(b"\n\n")


def test_sse_framing_with_usage(gateway: Gateway) -> None:
    response = post(
        gateway,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    parts = frames(response.content)
    assert parts[-1] == b"data: [DONE]"
    chunks = []
    for part in parts[:-1]:
        assert part.startswith(b"data: ") and b"\n" not in part
        chunks.append(json.loads(part[6:]))
    first, *middle, finish, usage = chunks
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert (chunk["id"], chunk["created"], chunk["model"]) == (first["id"], first["created"], MODEL)
        assert "usage" in chunk  # null on every chunk but the last, per the spec
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert first["usage"] is None
    for chunk in middle:
        (choice,) = chunk["choices"]
        assert set(choice) == {"index", "delta", "logprobs", "finish_reason"}
        assert choice["finish_reason"] is None and set(choice["delta"]) == {"content"}
    assert finish["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 3
    assert usage["meta"]["usage"]["credits_used"] > 0


def test_sse_without_usage_has_no_usage_key(gateway: Gateway) -> None:
    response = post(
        gateway, {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": True}
    )
    chunks = [json.loads(p[6:]) for p in frames(response.content)[:-1]]
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)
    # the cost still travels, on the last chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["meta"]["usage"]["credits_used"] > 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"{not json", "invalid_json"), (b"[1, 2]", "invalid_body"), (b"", "invalid_json")],
)
def test_unparseable_bodies_are_400(gateway: Gateway, raw: bytes, code: str) -> None:
    response = post(gateway, None, raw=raw)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == code


def test_missing_field_names_it(gateway: Gateway) -> None:
    response = post(gateway, {"model": MODEL})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"
    response = post(gateway, {"messages": [{"role": "user", "content": "x"}]})
    assert response.json()["error"]["param"] == "model"


def test_wrong_types_and_surrogates_are_400(gateway: Gateway) -> None:
    assert post(gateway, {"model": MODEL, "messages": "hello"}).status_code == 400
    assert post(gateway, {"model": MODEL, "messages": [{"role": "user", "content": 5}]}).status_code == 400
    lone = b'{"model": "%s", "messages": [{"role": "user", "content": "\\ud800"}]}' % MODEL.encode()
    assert post(gateway, None, raw=lone).status_code == 400


def test_stream_options_without_stream_is_400(gateway: Gateway) -> None:
    response = post(
        gateway,
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "stream_options"


def test_unknown_fields_are_ignored(gateway: Gateway) -> None:
    response = post(
        gateway,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1,
            "service_tier": "auto",
            "store": False,
            "metadata": {"a": "b"},
            "no_such_field": 1,
        },
    )
    assert response.status_code == 200


def test_every_response_has_a_request_id(gateway: Gateway) -> None:
    ok = post(gateway, {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
    bad = post(gateway, {"model": "nope", "messages": [{"role": "user", "content": "Hi"}]})
    ids = {ok.headers["x-request-id"], bad.headers["x-request-id"]}
    assert len(ids) == 2 and all(i.startswith("req_") for i in ids)
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "model_not_found"
    assert ok.headers["x-request-id"] in gateway.log()  # the access log names it


def test_health(gateway: Gateway) -> None:
    body = httpx.get(gateway.url + "/health").json()
    assert body["status"] == "ok" and body["models"][MODEL] == "active"


def test_metrics_count_requests_and_tokens(gateway: Gateway) -> None:
    post(gateway, {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    text = httpx.get(gateway.url + "/metrics").text
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}
    assert lines['gatewright_requests_total{route="/v1/chat/completions",status="200"}'] >= 1
    assert lines[f'gatewright_tokens_total{{kind="output",model="{MODEL}"}}'] >= 2
    assert lines[f'gatewright_credits_total{{model="{MODEL}"}}'] >= 1
