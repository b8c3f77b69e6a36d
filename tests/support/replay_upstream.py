"""A loopback OpenAI-compatible upstream that replays recorded responses (the seeds' real GLM
answers), whole or streamed in chunks cut at awkward places. For translation tests only.

The upstream model name picks the recording and how it is sent:

    glm-5.1 / glm-5            the recorded response, reasoning in `reasoning_content`
    <name>-reasoning-field     reasoning in a `reasoning` field instead (OpenRouter style)
    <name>-think-tags          reasoning inside <think>…</think> in the content, no separate field
    <name>-no-usage            streams without a usage chunk

Run: python -m tests.support.replay_upstream PORT. GET /last returns the last request body.
"""

from __future__ import annotations

import copy
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glm"
RECORDINGS = {"glm-5.1": "glm-5-1.response.json", "glm-5": "glm-5.response.json"}
# Chunk sizes in characters, cycled: small and uneven so tags and words are cut mid-way.
CUTS = (1, 3, 7, 2, 13, 5)
VARIANTS = ("-reasoning-field", "-think-tags", "-no-usage")

last_request: dict[str, Any] = {}


def recording(model: str) -> tuple[dict[str, Any], set[str]]:
    variants = set()
    for suffix in VARIANTS:
        if model.endswith(suffix):
            variants.add(suffix)
            model = model.removesuffix(suffix)
    for suffix in VARIANTS:  # variants combine in any order
        if model.endswith(suffix):
            variants.add(suffix)
            model = model.removesuffix(suffix)
    data = json.loads((FIXTURES / RECORDINGS[model]).read_text())
    message = data["choices"][0]["message"]
    if "-think-tags" in variants:
        message["content"] = f"<think>{message.pop('reasoning_content')}</think>{message['content']}"
    elif "-reasoning-field" in variants:
        message["reasoning"] = message.pop("reasoning_content")
    return data, variants


def pieces(text: str) -> list[str]:
    out, at = [], 0
    for size in itertools.cycle(CUTS):
        if at >= len(text):
            return out
        out.append(text[at : at + size])
        at += size
    return out


def chunk(data: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": data["id"],
        "object": "chat.completion.chunk",
        "created": data["created"],
        "model": data["model"],
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def stream(data: dict[str, Any], variants: set[str]) -> AsyncIterator[bytes]:
    message = data["choices"][0]["message"]
    yield chunk(data, {"role": "assistant", "content": ""})
    for field in ("reasoning_content", "reasoning"):
        for piece in pieces(message.get(field) or ""):
            yield chunk(data, {field: piece})
    for piece in pieces(message["content"]):
        yield chunk(data, {"content": piece})
    yield chunk(data, {}, data["choices"][0]["finish_reason"])
    if "-no-usage" not in variants:
        usage = {
            "id": data["id"],
            "object": "chat.completion.chunk",
            "created": data["created"],
            "model": data["model"],
            "choices": [],
            "usage": data["usage"],
        }
        yield b"data: " + json.dumps(usage).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


async def completions(request: Request) -> Response:
    body = await request.json()
    last_request.clear()
    last_request.update(body)
    try:
        data, variants = recording(body["model"])
    except KeyError:
        return JSONResponse({"error": {"message": f"no recording for {body.get('model')}"}}, status_code=404)
    data = copy.deepcopy(data)
    data["created"] = int(time.time())
    if body.get("stream"):
        return StreamingResponse(stream(data, variants), media_type="text/event-stream")
    return JSONResponse(data)


async def last(request: Request) -> Response:
    return JSONResponse(last_request)


app = Starlette(
    routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/last", last, methods=["GET"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
