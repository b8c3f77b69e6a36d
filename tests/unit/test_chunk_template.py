"""The OpenAI-compatible upstream's short way through its chunks (``TextTemplate``: the bytes
around a learned chunk's text) gives exactly the events of its general parser, for the chunk shapes
real servers send and for the ones that must not be mistaken for them."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gatewright.backends.openai_compat import OpenAICompatBackend, TextTemplate
from gatewright.core.backend import CallContext
from gatewright.core.catalog import parse_catalog
from gatewright.core.events import Event
from gatewright.core.types import CoreRequest, Message, TextPart

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "llama_cpp_server" / "text.stream.sse"
MOCK = {"id": "chatcmpl-mock1", "object": "chat.completion.chunk", "created": 1700000000, "model": "m"}
OPENAI = {**MOCK, "service_tier": "default", "system_fingerprint": "fp_1"}


def chunk(base: dict[str, Any], delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": extra.pop("index", 0), "delta": delta, "logprobs": extra.pop("logprobs", None)}
    choice["finish_reason"] = finish
    return b"data: " + orjson.dumps({**base, "choices": [choice], **extra})


def spaced(line: bytes) -> bytes:
    """As Python's json module writes it (llama_cpp.server): spaces after separators, \\u escapes."""
    return b"data: " + json.dumps(orjson.loads(line[6:])).encode()


TOKENS = ["Hello", ",", " wor", "ld", 'a "quote"', "\\", "ü", "😀", "\n", "m", "chatcmpl", "\x00", "Hello"]


def text_stream(base: dict[str, Any], tokens: list[str] = TOKENS, **extra: Any) -> list[bytes]:
    return [
        chunk(base, {"role": "assistant", "content": ""}, **extra),
        *(chunk(base, {"content": t}, **extra) for t in tokens),
        chunk(base, {}, "stop", **extra),
        b"data: " + orjson.dumps({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 13}}),
        b"data: [DONE]",
    ]


STREAMS: dict[str, list[bytes]] = {
    "llama.cpp server (recorded)": [line for line in RECORDED.read_bytes().split(b"\n") if line],
    "mock upstream": text_stream(MOCK),
    "usage null on every chunk (OpenAI, vLLM)": text_stream(OPENAI, usage=None),
    "python json (spaces, escapes)": [spaced(line) if line != b"data: [DONE]" else line for line in text_stream(MOCK)],
    "usage on every chunk": [
        chunk(MOCK, {"content": t}, usage={"prompt_tokens": 3, "completion_tokens": n}) for n, t in enumerate(TOKENS)
    ]
    + [chunk(MOCK, {}, "stop"), b"data: [DONE]"],
    "a field that changes every chunk": [chunk(MOCK, {"content": t}, obfuscation=t * 2) for t in TOKENS]
    + [chunk(MOCK, {}, "stop"), b"data: [DONE]"],
    "created ticks": [chunk({**MOCK, "created": 1700000000 + n // 3}, {"content": t}) for n, t in enumerate(TOKENS)]
    + [b"data: [DONE]"],
    "the text is also the model's name": [
        chunk(MOCK, {"content": "m"}),
        chunk({**MOCK, "model": "x"}, {"content": "m"}),
        chunk(MOCK, {"content": "y"}),
        b"data: [DONE]",
    ],
    "second choice, then other shapes in the same place": [
        chunk(MOCK, {"content": "a"}, index=1),
        chunk(MOCK, {"content": "b"}, index=1),
        chunk(MOCK, {"content": "c"}),
        chunk(MOCK, {"content": None}),
        chunk(MOCK, {"content": ""}),
        chunk(MOCK, {"content": 5}),
        chunk(MOCK, {"content": ["x"]}),
        chunk(MOCK, {"content": "d", "role": "assistant"}),
        chunk(MOCK, {"content": "e"}, "length"),
        chunk(MOCK, {"content": "f"}, logprobs={"content": [{"token": "f", "logprob": -0.5}]}),
        chunk(MOCK, {"reasoning_content": "think"}),
        chunk(MOCK, {"content": "g"}),
        b'data: {"id":"chatcmpl-mock1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":'
        b'[{"index":0,"delta":{"content":"h","content":"i"},"logprobs":null,"finish_reason":null}]}',
        chunk(MOCK, {"content": "j"}),
        b"data: [DONE]",
    ],
}


class Recorded:
    """An upstream answer's SSE lines, two to a network read."""

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines

    async def line_batches(self) -> AsyncIterator[deque[bytes]]:
        for at in range(0, len(self._lines), 2):
            yield deque(self._lines[at : at + 2])


def backend(learns: int) -> OpenAICompatBackend:
    entry = {"id": "m", "context_window": 2048, "max_output": 128, "backend": "openai", "base_url": "http://x/v1"}
    model = parse_catalog({"models": [entry]}).entries[0]
    upstream = OpenAICompatBackend(model.deployments[0], model)
    upstream.template_learns = learns
    return upstream


async def events(lines: list[bytes], learns: int, stream: bool) -> tuple[list[Event], Any]:
    request = CoreRequest(model="m", messages=(Message("user", (TextPart("hi"),)),), stream=stream)
    ctx = CallContext("req_test")
    got = [e async for e in backend(learns).streamed(Recorded(lines), ctx, request)]  # type: ignore[arg-type]
    return got, ctx.usage


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("name", list(STREAMS))
async def test_short_way_gives_the_general_events(name: str, stream: bool) -> None:
    assert await events(STREAMS[name], 4, stream) == await events(STREAMS[name], 0, stream)


@pytest.mark.parametrize("name", ["llama.cpp server (recorded)", "mock upstream", "python json (spaces, escapes)"])
def test_the_usual_shapes_are_read_the_short_way(name: str) -> None:
    texts = [c for c in (chunk_text(line) for line in STREAMS[name]) if c]
    template = TextTemplate()
    read = []
    for line in STREAMS[name]:
        if not line.startswith(b"data: {"):
            continue
        data = line[5:].strip()
        if (text := chunk_text(line)) and template.read(data) is None:
            template.learn(data, orjson.loads(data), text)
        else:
            read.append(template.read(data))
    assert read and [t for t in read if t] == texts[1:]  # all but the first token, each as its chunk says
    assert None in read  # and the others not


def chunk_text(line: bytes) -> str | None:
    if not line.startswith(b"data: {"):
        return None
    choices = orjson.loads(line[5:])["choices"]
    delta = choices[0]["delta"] if choices else {}
    return delta.get("content") if list(delta) == ["content"] and not choices[0]["finish_reason"] else None


def test_a_text_found_elsewhere_in_the_chunk_is_not_learned() -> None:
    template = TextTemplate()
    data = orjson.dumps({**MOCK, "choices": [{"index": 0, "delta": {"content": "m"}}]})
    template.learn(data, orjson.loads(data), "m")  # "m" is also the model
    assert template.read(orjson.dumps({**MOCK, "choices": [{"index": 0, "delta": {"content": "z"}}]})) is None
