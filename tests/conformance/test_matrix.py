"""The capability matrix: the same conformance cases over every kind of backend, through the
official OpenAI SDK.

    kind          what answers                                                     process
    embedded      the llama.cpp engine inside the gateway, the real model         the shared real-model gateway
    llama-server  a real ``llama_cpp.server`` upstream, the same GGUF              a gateway process in front of it
    anthropic     an Anthropic upstream replaying Anthropic's recorded streams    the gateway in process

Each kind declares what it can show (``Kind.cases``). A case it cannot show is one of two things,
never silently passed: a capability its catalog entry does not claim, where the gateway must refuse
with a clear 400 naming the parameter (``Kind.refuses``), or something a recording cannot
demonstrate (a recording answers the same whatever the request asks), skipped with that reason.
Real-model kinds generate a handful of tokens per case: the model is slow on two cores.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from tests.conftest import MODEL
from tests.support.app import AppGateway, app_gateway
from tests.support.catalogs import catalog_toml
from tests.support.faulty_upstream import FaultyUpstream, running_faulty_upstream, sse
from tests.support.procs import Gateway

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic_upstream"
ROUTE = "conformance-claude"
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}
ASK = [{"role": "user", "content": "Say hello in two words."}]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}
CASES = ("plain", "stream", "tools", "json_schema", "stop", "n", "usage", "errors")


@dataclass
class Kind:
    name: str
    model: str
    client: openai.OpenAI
    cases: frozenset[str]  # shown with their full meaning
    refuses: dict[str, str] = field(default_factory=dict)  # case → the parameter a 400 must name
    skips: dict[str, str] = field(default_factory=dict)  # case → why this kind cannot show it
    script: Callable[[str, bool], None] = lambda case, stream: None  # what a recorded upstream replays


# -- the recorded Anthropic upstream ---------------------------------------------------------------


RECORDING_OF = {"tools": "tool_use.stream.sse", "usage": "cache_usage.stream.sse"}


@pytest.fixture(scope="session")
def claude_recordings() -> Iterator[FaultyUpstream]:
    with running_faulty_upstream() as server:
        yield server


@pytest.fixture(scope="session")
def recorded_gateway(
    tmp_path_factory: pytest.TempPathFactory, claude_recordings: FaultyUpstream
) -> Iterator[AppGateway]:
    root = tmp_path_factory.mktemp("conformance-anthropic")
    entry = {
        "id": "claude-recorded",
        "context_window": 200000,
        "max_output": 8192,
        "backend": "anthropic",
        "base_url": claude_recordings.base_url(ROUTE),
        "upstream_model": "claude-sonnet-4-5",
        "prices": {"input": 3.0, "cached_input": 0.3, "output": 15.0},
        "capabilities": {"tools": True},
        "max_retries": 0,
    }
    (root / "catalog.toml").write_text(catalog_toml([entry]))
    with app_gateway(root, catalog=root / "catalog.toml") as gw:
        yield gw


# -- the kinds ---------------------------------------------------------------------------------------


@pytest.fixture(params=["embedded", "llama-server", "anthropic"])
def kind(request: pytest.FixtureRequest) -> Kind:
    if request.param == "embedded":
        gw: Gateway = request.getfixturevalue("gateway")
        return Kind("embedded", MODEL, gw.openai(), frozenset(CASES))
    if request.param == "llama-server":
        llama: Gateway = request.getfixturevalue("llama_gateway")
        # served-qwen claims tools, not json_schema (llama_cpp.server answers json_schema with a 500).
        return Kind(
            "llama-server",
            "served-qwen",
            llama.openai(),
            frozenset(CASES) - {"json_schema"},
            refuses={"json_schema": "response_format"},
        )
    recorded: AppGateway = request.getfixturevalue("recorded_gateway")
    upstream: FaultyUpstream = request.getfixturevalue("claude_recordings")

    def script(case: str, stream: bool) -> None:
        # Streamed or not, the gateway asks an upstream for a stream (a whole answer is it collected).
        name = RECORDING_OF.get(case, "basic.stream.sse")
        upstream.script(ROUTE, sse((RECORDINGS / name).read_bytes(), pieces=7))

    return Kind(
        "anthropic",
        "claude-recorded",
        recorded.openai(),
        frozenset({"plain", "stream", "tools", "usage", "errors"}),
        refuses={"json_schema": "response_format"},
        skips={
            "stop": "a recording answers the same whatever stop sequences are asked for",
            "n": "a recording holds one answer",
        },
        script=script,
    )


def _shown(kind: Kind, case: str) -> bool:
    """Whether the case runs with its full meaning here; otherwise the refusal is checked or it skips."""
    if case in kind.cases:
        return True
    if case in kind.refuses:
        return False
    pytest.skip(f"{kind.name}: {kind.skips[case]}")  # a KeyError here: a kind must declare every case


def _create(kind: Kind, case: str, stream: bool = False, **params: Any) -> Any:
    kind.script(case, stream)
    return kind.client.chat.completions.create(model=kind.model, messages=ASK, stream=stream, **params)  # type: ignore[call-overload]


# -- the cases ---------------------------------------------------------------------------------------


def test_plain(kind: Kind) -> None:
    _shown(kind, "plain")
    done = _create(kind, "plain", max_tokens=8)
    (choice,) = done.choices
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert done.model == kind.model


def test_stream(kind: Kind) -> None:
    _shown(kind, "stream")
    chunks = list(_create(kind, "stream", stream=True, max_tokens=8, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text.strip() and finishes in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_tools(kind: Kind) -> None:
    _shown(kind, "tools")
    tool_choice = {"type": "function", "function": {"name": "get_weather"}}
    done = _create(kind, "tools", tools=[WEATHER], tool_choice=tool_choice, max_tokens=48)
    (choice,) = done.choices
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    assert isinstance(json.loads(call.function.arguments), dict)


def test_json_schema(kind: Kind) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA, "strict": True}}
    if not _shown(kind, "json_schema"):
        with pytest.raises(openai.BadRequestError) as refused:
            _create(kind, "json_schema", response_format=fmt, max_tokens=24)
        assert refused.value.body["param"] == kind.refuses["json_schema"]  # type: ignore[index]
        return
    kind.script("json_schema", False)
    ask = [{"role": "user", "content": "Reply in JSON with the field answer set to the word hello."}]
    done = kind.client.chat.completions.create(
        model=kind.model,
        messages=ask,
        response_format=fmt,
        max_tokens=40,
        temperature=0,  # type: ignore[arg-type]
    )
    assert done.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(done.choices[0].message.content), SCHEMA)


def test_stop(kind: Kind) -> None:
    _shown(kind, "stop")
    # Count to ten: the stop sequence comes early, whatever words the model picks around the digits.
    ask = [{"role": "user", "content": "Count from 1 to 10, digits separated by commas."}]
    kind.script("stop", False)
    done = kind.client.chat.completions.create(
        model=kind.model,
        messages=ask,
        stop=["4"],
        max_tokens=40,
        temperature=0,  # type: ignore[arg-type]
    )
    (choice,) = done.choices
    assert "4" not in (choice.message.content or "")
    assert choice.finish_reason == "stop"


def test_n(kind: Kind) -> None:
    _shown(kind, "n")
    done = _create(kind, "n", n=2, max_tokens=4, seed=7)
    assert [c.index for c in done.choices] == [0, 1]
    assert all(isinstance(c.message.content, str) for c in done.choices)
    assert all(c.finish_reason in ("stop", "length") for c in done.choices)
    # Usage is the backend's own count (llama_cpp.server reports one choice's tokens for n=2).
    assert done.usage.completion_tokens >= 1


def test_usage(kind: Kind) -> None:
    _shown(kind, "usage")
    done = _create(kind, "usage", max_tokens=6)
    usage, meta = done.usage, done.model_extra["meta"]["usage"]  # type: ignore[index]
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert meta["credits_used"] > 0  # every kind here has a price: the call was billed


def test_errors(kind: Kind) -> None:
    _shown(kind, "errors")
    with pytest.raises(openai.NotFoundError) as unknown:
        kind.client.chat.completions.create(model="no-such-model", messages=ASK)  # type: ignore[arg-type]
    assert unknown.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as invalid:
        kind.client.chat.completions.create(model=kind.model, messages=ASK, temperature=5)  # type: ignore[arg-type]
    assert invalid.value.body["param"] == "temperature"  # type: ignore[index]
