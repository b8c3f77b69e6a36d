"""Wire details of Chat Completions that real clients and the reference documents check, on a
gateway running the deterministic ``fake`` backend (fast): the reference's ``request_id`` beside
``id``, no ``system_fingerprint: null``, ``reasoning.exclude``, refused fields named in a 400, and
the two model lists (``/models`` in the reference's shape, ``/v1/models`` in OpenAI's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.procs import Gateway, running_gateway

CATALOG = """
[[models]]
id = "echo"
name = "Echo"
developer = "gatewright"
description = "Says the last user message back."
context_window = 4096
max_output = 512
backend = "fake"
capabilities = { tools = true }

[[models]]
id = "thinker"
context_window = 4096
max_output = 512
backend = "fake"
capabilities = { reasoning = true }
reasoning_tags = ["<think>", "</think>"]

[[models]]
id = "elsewhere"
context_window = 4096
max_output = 512
backend = "openai"
base_url = "https://api.example.com/v1"
api_key_env = "GW_WIRE_FIELDS_UNSET_KEY"
"""
THINK = [{"role": "user", "content": "<think> weigh it up </think> the answer"}]


@pytest.fixture(scope="module")
def fake_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("openai-wire-fields")
    (root / "catalog.toml").write_text(CATALOG)
    with running_gateway(root, catalog=root / "catalog.toml") as gw:
        assert gw.api_key, gw.log()
        yield gw


@pytest.fixture(scope="module")
def client(fake_gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fake_gateway.url}/v1", api_key=fake_gateway.api_key, max_retries=0, timeout=60)


def post(gw: Gateway, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {gw.api_key}"}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def chunks(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_request_id_beside_id_and_no_null_fingerprint(fake_gateway: Gateway) -> None:
    ask = {"model": "echo", "messages": [{"role": "user", "content": "one two"}]}
    whole = post(fake_gateway, ask)
    body = whole.json()
    assert body["request_id"] == whole.headers["x-request-id"] and body["id"].startswith("chatcmpl-")
    assert "system_fingerprint" not in body
    streamed = post(fake_gateway, {**ask, "stream": True, "stream_options": {"include_usage": True}})
    frames = chunks(streamed)
    assert {f["request_id"] for f in frames} == {streamed.headers["x-request-id"]}
    assert all("system_fingerprint" not in f for f in frames)


def test_reasoning_exclude_drops_the_reasoning_but_still_reports_it(client: openai.OpenAI) -> None:
    shown = client.chat.completions.create(model="thinker", messages=THINK)  # type: ignore[arg-type]
    hidden = client.chat.completions.create(
        model="thinker",
        messages=THINK,  # type: ignore[arg-type]
        extra_body={"reasoning": {"exclude": True}},
    )
    assert shown.choices[0].message.model_extra["reasoning_content"].strip() == "weigh it up"  # type: ignore[index]
    assert "reasoning_content" not in (hidden.choices[0].message.model_extra or {})
    assert hidden.choices[0].message.content == shown.choices[0].message.content
    assert hidden.usage == shown.usage  # the same tokens, billed the same
    stream = client.chat.completions.create(
        model="thinker",
        messages=THINK,  # type: ignore[arg-type]
        stream=True,
        extra_body={"reasoning": {"exclude": True}},
    )
    deltas = [c.choices[0].delta for c in stream if c.choices]
    assert not any((d.model_extra or {}).get("reasoning_content") for d in deltas)
    assert "".join(d.content or "" for d in deltas).strip() == "the answer"


@pytest.mark.parametrize(
    ("field", "value"),
    [("logit_bias", {"1": 5}), ("audio", {"voice": "alloy", "format": "wav"}), ("verbosity", "high")],
)
def test_fields_that_would_change_the_answer_are_refused_by_name(client: openai.OpenAI, field: str, value: Any) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={field: value},
        )
    assert raised.value.param == field and raised.value.code == "unsupported_parameter"


def test_reference_model_list_needs_no_key_and_has_type_and_info(fake_gateway: Gateway) -> None:
    listed = httpx.get(f"{fake_gateway.url}/models", timeout=30)
    assert listed.status_code == 200
    models = listed.json()
    assert isinstance(models, list) and [m["id"] for m in models] == ["echo", "thinker"]  # active ones
    echo = models[0]
    assert echo["type"] == "chat-completion" and echo["endpoints"][0] == "/v1/chat/completions"
    assert echo["info"] == {
        "name": "Echo",
        "developer": "gatewright",
        "description": "Says the last user message back.",
        "contextLength": 4096,
        "maxTokens": 512,
    }
    assert "openai/chat-completion.function" in echo["features"]
    assert "openai/chat-completion.reasoning" in models[1]["features"]


def test_v1_models_keeps_openais_list_shape(client: openai.OpenAI) -> None:
    page = client.models.list()
    assert [m.id for m in page.data] == ["echo", "thinker", "elsewhere"]
    assert all(m.object == "model" for m in page.data)
