"""Core events → the Response object and OpenAI's typed stream events.

One ``ResponseBuilder`` serves both ways of answering: it folds the neutral events into output
items (reasoning, message, function_call, in the order the model produced them) and, while doing
so, writes the stream events that describe each step with its ``sequence_number``. A non-streaming
answer is the same fold with the events thrown away, so both shapes cannot drift apart.
"""

from __future__ import annotations

import time
from typing import Any

from gatewright.api.public import public_message
from gatewright.api.responses.translate import item_id
from gatewright.api.sse import event_frame
from gatewright.core.errors import GatewrightError
from gatewright.core.events import (
    ChoiceEnd,
    Event,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from gatewright.core.types import Cost, FinishReason, TokenLogprob, Usage

# finish reason → (status, incomplete_details.reason)
STATUS: dict[str, tuple[str, str | None]] = {
    "stop": ("completed", None),
    "tool_calls": ("completed", None),
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}
# Our error codes → the Response object's error.code (an enum in OpenAI's spec).
FAILED_CODE = {"rate_limit_exceeded": "rate_limit_exceeded"}


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def meta_dict(usage: Usage, cost: Cost | None) -> dict[str, Any] | None:
    if cost is None:
        return None
    meta: dict[str, Any] = {"credits_used": cost.credits, "usd_spent": cost.usd}
    if usage.estimated:
        meta["estimated"] = True  # the token counts are the gateway's guess (the upstream reported none)
    return {"usage": meta}


def _logprobs(items: tuple[TokenLogprob, ...] | None, *, stored: bool) -> list[dict[str, Any]]:
    """``stored``: the output_text part's shape (bytes included); else the delta events' shape."""
    if not items:
        return []
    if stored:
        return [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.bytes),
                "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top],
            }
            for lp in items
        ]
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "top_logprobs": [{"token": t.token, "logprob": t.logprob} for t in lp.top],
        }
        for lp in items
    ]


class _Item:
    """One output item being built: its wire dict and the text gathered so far."""

    __slots__ = ("body", "chunks", "index", "logprobs")

    def __init__(self, index: int, body: dict[str, Any]) -> None:
        self.index = index
        self.body = body
        self.chunks: list[str] = []
        self.logprobs: list[dict[str, Any]] = []

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def kind(self) -> str:
        return str(self.body["type"])


class ResponseBuilder:
    def __init__(self, base: dict[str, Any], *, emit: bool) -> None:
        """``base``: the Response object's request-derived fields (id, model, tools, ...)."""
        self.base = base
        self.emit = emit
        self.sequence = 0
        self.items: list[_Item] = []
        self.open: _Item | None = None
        self.calls: dict[int, _Item] = {}  # tool call index → its item
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None
        self.cost: Cost | None = None

    # -- frames ---------------------------------------------------------------------------

    def _event(self, frames: list[bytes], kind: str, **fields: Any) -> None:
        if not self.emit:
            return
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        frames.append(event_frame(kind, payload))

    def snapshot(self, status: str) -> dict[str, Any]:
        """The Response object as it stands (``status`` given: in_progress, completed, ...)."""
        body = dict(self.base)
        body["status"] = status
        body["output"] = [item.body for item in self.items]
        body["output_text"] = "".join(
            part["text"]
            for item in self.items
            if item.kind == "message"
            for part in item.body["content"]
            if part["type"] == "output_text"
        )
        if status in ("completed", "incomplete"):
            body["completed_at"] = int(time.time()) if status == "completed" else None
            usage = self.usage or Usage()
            body["usage"] = usage_dict(usage)
            meta = meta_dict(usage, self.cost)
            if meta is not None:
                body["meta"] = meta
        if status == "incomplete":
            body["incomplete_details"] = {"reason": STATUS[self.finish_reason or "length"][1]}
        return body

    def start(self) -> list[bytes]:
        frames: list[bytes] = []
        snapshot = self.snapshot("in_progress")
        self._event(frames, "response.created", response=snapshot)
        self._event(frames, "response.in_progress", response=snapshot)
        return frames

    # -- items ----------------------------------------------------------------------------

    def _open(self, frames: list[bytes], body: dict[str, Any]) -> _Item:
        item = _Item(len(self.items), body)
        self.items.append(item)
        self.open = item
        self._event(frames, "response.output_item.added", output_index=item.index, item=dict(body))
        return item

    def _open_part(self, frames: list[bytes], item: _Item, part: dict[str, Any]) -> None:
        where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        self._event(frames, "response.content_part.added", **where, part=part)

    def _close(self, frames: list[bytes], status: str = "completed") -> None:
        item = self.open
        if item is None:
            return
        self.open = None
        text = "".join(item.chunks)
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": item.logprobs}
            done = [{k: v for k, v in lp.items() if k != "bytes"} for lp in item.logprobs]
            self._event(frames, "response.output_text.done", **where, content_index=0, text=text, logprobs=done)
            self._event(frames, "response.content_part.done", **where, content_index=0, part=part)
            item.body["content"] = [part]
        elif item.kind == "reasoning":
            part = {"type": "reasoning_text", "text": text}
            self._event(frames, "response.reasoning_text.done", **where, content_index=0, text=text)
            self._event(frames, "response.content_part.done", **where, content_index=0, part=part)
            item.body["content"] = [part]
        else:  # function_call
            item.body["arguments"] = text
            self._event(
                frames, "response.function_call_arguments.done", **where, name=item.body["name"], arguments=text
            )
        item.body["status"] = status
        self._event(frames, "response.output_item.done", output_index=item.index, item=item.body)

    def _text(self, frames: list[bytes], event: TextDelta) -> None:
        item = self.open
        if item is None or item.kind != "message":
            self._close(frames)
            body = {"id": item_id("message"), "type": "message", "status": "in_progress", "content": []}
            body["role"] = "assistant"
            item = self._open(frames, body)
            self._open_part(frames, item, {"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        item.chunks.append(event.text)
        if event.logprobs:
            item.logprobs.extend(_logprobs(event.logprobs, stored=True))
        self._event(
            frames,
            "response.output_text.delta",
            item_id=item.id,
            output_index=item.index,
            content_index=0,
            delta=event.text,
            logprobs=_logprobs(event.logprobs, stored=False),
        )

    def _reasoning(self, frames: list[bytes], event: ReasoningDelta) -> None:
        item = self.open
        if item is None or item.kind != "reasoning":
            self._close(frames)
            body = {"id": item_id("reasoning"), "type": "reasoning", "summary": [], "content": []}
            body["status"] = "in_progress"
            item = self._open(frames, body)
            self._open_part(frames, item, {"type": "reasoning_text", "text": ""})
        item.chunks.append(event.text)
        where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        self._event(frames, "response.reasoning_text.delta", **where, delta=event.text)

    def add(self, event: Event) -> list[bytes]:
        frames: list[bytes] = []
        if getattr(event, "choice", 0) != 0:  # one choice: the Responses API has no `n`
            return frames
        match event:
            case TextDelta():
                self._text(frames, event)
            case ReasoningDelta():
                self._reasoning(frames, event)
            case ToolCallStart(index=k, id=call_id, name=name):
                self._close(frames)
                body = {"id": item_id("function_call"), "type": "function_call", "status": "in_progress"}
                body |= {"arguments": "", "call_id": call_id, "name": name}
                self.calls[k] = self._open(frames, body)
            case ToolCallDelta(index=k, arguments=fragment):
                item = self.calls[k]
                item.chunks.append(fragment)
                if item is not self.open:
                    # An upstream interleaving parallel calls: the call was closed when the next one
                    # began (OpenAI's order); its arguments still end up whole in the final response.
                    item.body["arguments"] += fragment
                where = {"item_id": item.id, "output_index": item.index}
                self._event(frames, "response.function_call_arguments.delta", **where, delta=fragment)
            case ChoiceEnd(finish_reason=reason):
                self.finish_reason = reason
                self._close(frames, "incomplete" if reason == "length" else "completed")
            case UsageReport(usage=usage, cost=cost):
                self.usage, self.cost = usage, cost
        return frames

    def finish(self) -> tuple[list[bytes], dict[str, Any]]:
        """The closing frames and the final Response object (completed or incomplete)."""
        frames: list[bytes] = []
        self._close(frames)
        status = STATUS.get(self.finish_reason or "stop", ("completed", None))[0]
        response = self.snapshot(status)
        self._event(frames, f"response.{status}", response=response)
        return frames, response

    def failed(self, error: GatewrightError) -> list[bytes]:
        """After the first byte an error can only travel in-stream: ``response.failed``."""
        frames: list[bytes] = []
        self._close(frames, "incomplete")
        response = self.snapshot("failed")
        response["error"] = {
            "code": FAILED_CODE.get(error.code or "", "server_error"),
            "message": public_message(error),
        }
        self._event(frames, "response.failed", response=response)
        return frames
