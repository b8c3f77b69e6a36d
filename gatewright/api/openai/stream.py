"""Render core events as OpenAI ``chat.completion.chunk`` SSE frames, byte-exact to OpenAI's order:
a role chunk per choice, deltas, a finish chunk per choice, the optional usage chunk
(``choices: []``), then ``data: [DONE]``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from gatewright.api.openai.errors import error_body
from gatewright.api.openai.translate import logprobs_dict, usage_dict
from gatewright.api.public import internal
from gatewright.api.sse import DONE, data_frame
from gatewright.core.errors import GatewrightError
from gatewright.core.events import (
    ChoiceEnd,
    Event,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)


class ChunkRenderer:
    __slots__ = ("_base", "_details", "_held", "_include_usage", "_started", "_text_head", "_text_tail")

    def __init__(
        self, completion_id: str, created: int, model: str, include_usage: bool, request_id: str | None = None
    ) -> None:
        # No system_fingerprint: OpenAI types it as a string, and gatewright has none (never null).
        self._base: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        if request_id is not None:
            self._base["request_id"] = request_id
        self._include_usage = include_usage
        self._started: set[int] = set()
        self._details: dict[int, int] = {}  # choice → index of its last reasoning_details item
        self._held: dict[str, Any] | None = None  # last finish chunk, waiting for the cost
        # A text delta's frame is the same bytes around its text (most frames of a stream): cut
        # once from the frame orjson makes for a marker, so the bytes stay exactly orjson's.
        marker = orjson.dumps("\x00")
        frame = data_frame(self._chunk([self._choice(0, {"content": "\x00"})]))
        cut = frame.rindex(marker)  # the content comes after every field a caller named
        self._text_head = frame[:cut]
        self._text_tail = frame[cut + len(marker) :]

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk = dict(self._base)
        chunk["choices"] = choices
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def _detail(self, choice: int, detail: dict[str, Any]) -> dict[str, Any]:
        """A ``reasoning_details`` delta (OpenRouter's convention), indexed per choice."""
        index = self._details[choice] = self._details.get(choice, -1) + 1
        return {"reasoning_details": [{**detail, "index": index}]}

    @staticmethod
    def _choice(index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

    def render(self, event: Event) -> list[bytes]:
        if (
            type(event) is TextDelta
            and event.choice == 0
            and event.logprobs is None
            and self._held is None
            and 0 in self._started
        ):  # most frames: a token of text of the first choice, already begun
            return [self._text_head + orjson.dumps(event.text) + self._text_tail]
        frames: list[bytes] = []
        if self._held is not None and not isinstance(event, UsageReport):
            frames.append(data_frame(self._held))
            self._held = None
        choice = getattr(event, "choice", None)
        if choice is not None and choice not in self._started:
            self._started.add(choice)
            if isinstance(event, ToolCallStart):
                # As OpenAI: a choice that opens with a tool call has it in its role chunk, content null.
                delta = {"role": "assistant", "content": None, "tool_calls": [_call_start(event)], "refusal": None}
                frames.append(data_frame(self._chunk([self._choice(choice, delta)])))
                return frames
            frames.append(
                data_frame(self._chunk([self._choice(choice, {"role": "assistant", "content": "", "refusal": None})]))
            )
        match event:
            case TextDelta(choice=i, text=text, logprobs=lps):
                lp = logprobs_dict(lps) if lps is not None else None
                frames.append(data_frame(self._chunk([self._choice(i, {"content": text}, lp)])))
            case ReasoningDelta(choice=i, text=text):
                frames.append(data_frame(self._chunk([self._choice(i, {"reasoning_content": text})])))
            case ReasoningSignature(choice=i, signature=signature):
                detail = {"type": "reasoning.text", "text": "", "signature": signature}
                frames.append(data_frame(self._chunk([self._choice(i, self._detail(i, detail))])))
            case RedactedReasoning(choice=i, data=data):
                detail = {"type": "reasoning.encrypted", "data": data}
                frames.append(data_frame(self._chunk([self._choice(i, self._detail(i, detail))])))
            case ToolCallStart(choice=i):
                frames.append(data_frame(self._chunk([self._choice(i, {"tool_calls": [_call_start(event)]})])))
            case ToolCallDelta(choice=i, index=k, arguments=fragment):
                call = {"index": k, "function": {"arguments": fragment}}
                frames.append(data_frame(self._chunk([self._choice(i, {"tool_calls": [call]})])))
            case ChoiceEnd(choice=i, finish_reason=reason):
                self._held = self._chunk([self._choice(i, {}, None, reason)])
            case UsageReport(usage=usage, cost=cost):
                meta = {"usage": {"credits_used": cost.credits, "usd_spent": cost.usd}} if cost else None
                if meta is not None and usage.estimated:
                    meta["usage"]["estimated"] = True  # the token counts are the gateway's guess
                if self._include_usage:
                    if self._held is not None:
                        frames.append(data_frame(self._held))
                        self._held = None
                    chunk = dict(self._base)
                    chunk["choices"] = []
                    chunk["usage"] = usage_dict(usage)
                    if meta is not None:
                        chunk["meta"] = meta
                    frames.append(data_frame(chunk))
                elif self._held is not None:
                    if meta is not None:
                        self._held["meta"] = meta
                    frames.append(data_frame(self._held))
                    self._held = None
        return frames

    def close(self) -> list[bytes]:
        frames = [data_frame(self._held)] if self._held is not None else []
        self._held = None
        return frames


def _call_start(event: ToolCallStart) -> dict[str, Any]:
    """A call's first fragment: index, id, type and name; the arguments follow on the same index."""
    return {
        "index": event.index,
        "id": event.id,
        "type": "function",
        "function": {"name": event.name, "arguments": ""},
    }


async def render(events: AsyncIterator[Event], renderer: ChunkRenderer) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            for frame in renderer.render(event):
                yield frame
    except Exception as raised:
        # After the first byte an error can only travel in-stream; the SDK raises on an `error` key.
        # A bug is told as a generic error in the stream too, not as a dropped connection.
        error = raised if isinstance(raised, GatewrightError) else internal(raised)
        for frame in renderer.close():
            yield frame
        yield data_frame(error_body(error))
        return
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    for frame in renderer.close():
        yield frame
    yield DONE
