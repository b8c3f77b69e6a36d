"""Small HTTP helpers for the platform tests: calls with a key, streams read as SSE events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx


def auth(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def chat_body(text: str = "hello billing world", model: str = "fake", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def assert_error(response: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> None:
    """OpenAI's error object with the expected status (and code / param where given)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error


@dataclass
class StreamResult:
    status: int
    request_id: str
    headers: httpx.Headers
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False  # saw data: [DONE]

    @property
    def credits_used(self) -> int | None:
        for event in self.events:
            meta = event.get("meta")
            if meta:
                return int(meta["usage"]["credits_used"])
        return None

    @property
    def error(self) -> dict[str, Any] | None:
        return next((e["error"] for e in self.events if "error" in e), None)


async def stream_chat(
    client: httpx.AsyncClient, key: str, body: dict[str, Any], *, leave_after: int | None = None
) -> StreamResult:
    """A streaming chat call; with ``leave_after`` the client hangs up after that many events."""
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=auth(key)) as r:
        result = StreamResult(r.status_code, r.headers.get("x-request-id", ""), r.headers)
        if r.status_code != 200:
            await r.aread()
            result.events.append(r.json())
            return result
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                result.done = True
                break
            result.events.append(json.loads(line[6:]))
            if leave_after is not None and len(result.events) >= leave_after:
                break  # leaving the block closes the connection mid-stream
    return result
