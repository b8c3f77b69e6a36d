"""Turning what a local model writes into neutral events.

A shaper receives decoded text as it is generated (already cut at stop sequences where the engine
applies them) and returns events. Plain text becomes ``TextDelta``; with tools, ``ToolCallShaper``
reads the call forms the grammar of ``toolcalls`` allows and streams each call as
``ToolCallStart`` + ``ToolCallDelta`` fragments while it is being generated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Protocol

import orjson

from gatewright.core.events import Event, TextDelta, ToolCallDelta, ToolCallStart
from gatewright.core.ids import tool_call_id
from gatewright.core.types import FinishReason, TokenLogprob


class Shaper(Protocol):
    # A stop sequence the shaper itself found in free text; the engine then ends the choice.
    stopped_by: str | None

    def feed(self, text: str, logprobs: tuple[TokenLogprob, ...] | None) -> list[Event]: ...

    def finish(self, reason: FinishReason) -> tuple[list[Event], FinishReason]:
        """Flush what is held back; may change the finish reason (e.g. to ``tool_calls``)."""
        ...


class Stops(Protocol):
    """Cuts text at stop sequences (the engine's ``StopScanner``)."""

    def push(self, text: str) -> tuple[str, str | None]: ...

    def flush(self) -> str: ...


class TextShaper:
    __slots__ = ("choice", "stopped_by")

    def __init__(self, choice: int) -> None:
        self.choice = choice
        self.stopped_by: str | None = None

    def feed(self, text: str, logprobs: tuple[TokenLogprob, ...] | None) -> list[Event]:
        return [TextDelta(self.choice, text, logprobs)] if text or logprobs else []

    def finish(self, reason: FinishReason) -> tuple[list[Event], FinishReason]:
        return [], reason


class Mode(Enum):
    UNDECIDED = "undecided"  # the output so far could still start a call
    ANSWER = "answer"
    CALLS = "calls"


class Part(Enum):
    SEEK = "seek"  # before a call object: tags, fences and newlines are skipped
    HEAD = "head"  # inside '{"name": "...", "arguments": '
    ARGUMENTS = "arguments"  # streamed as they come
    TAIL = "tail"  # the call object's closing brace


# What the grammar writes before the arguments, matched once the arguments' first brace is in
# (a token may carry the separator's space and the brace together); spaces tolerated.
_HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=[{\[])')


class JsonExtent:
    """Finds where one JSON object or array ends in text that arrives in pieces."""

    __slots__ = ("_depth", "_escaped", "_in_string")

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def scan(self, text: str) -> int | None:
        """Characters of ``text`` up to and including the value's end, or None if it goes on."""
        for at, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return at + 1
        return None


class ToolCallShaper:
    """Reads an answer or tool calls, as the grammar of ``toolcalls.call_grammar`` lets them come.

    Text is held back only while it could still be the start of a call (the first few characters).
    Stop sequences apply to a free-text answer only: the grammar, not a stop string, ends calls.
    """

    __slots__ = (
        "_buffer",
        "_calls",
        "_extent",
        "_held",
        "_new_id",
        "_part",
        "_stops",
        "answer_allowed",
        "choice",
        "mode",
        "openers",
        "stopped_by",
    )

    def __init__(
        self,
        choice: int,
        openers: Sequence[str],
        answer_allowed: bool,
        stops: Stops,
        new_id: Callable[[], str] = tool_call_id,
    ) -> None:
        self.choice = choice
        self.openers = tuple(openers)
        self.answer_allowed = answer_allowed
        self.mode = Mode.UNDECIDED if answer_allowed else Mode.CALLS
        self.stopped_by: str | None = None
        self._stops = stops
        self._new_id = new_id
        self._buffer = ""
        self._held: list[TokenLogprob] = []
        self._part = Part.SEEK
        self._extent = JsonExtent()
        self._calls = 0

    def feed(self, text: str, logprobs: tuple[TokenLogprob, ...] | None) -> list[Event]:
        if self.mode is Mode.ANSWER:
            return self._answer(text, logprobs)
        self._buffer += text
        if self.mode is Mode.UNDECIDED:
            if logprobs:
                self._held.extend(logprobs)
            if any(self._buffer.startswith(o) for o in self.openers):
                self.mode = Mode.CALLS
            elif self._buffer and not any(o.startswith(self._buffer) for o in self.openers):
                return self._start_answer(logprobs is not None)
            else:
                return []
        return self._read_calls()

    def finish(self, reason: FinishReason) -> tuple[list[Event], FinishReason]:
        events: list[Event] = []
        if self.mode is Mode.UNDECIDED and self._buffer:
            # The output ended while it still looked like the start of a call: it was an answer.
            events = self._start_answer(bool(self._held))
        if self.mode is Mode.ANSWER and self.stopped_by is None:
            tail = self._stops.flush()
            if tail:
                events.append(TextDelta(self.choice, tail))
        if self._calls and reason == "stop":
            reason = "tool_calls"
        return events, reason

    def _start_answer(self, with_logprobs: bool) -> list[Event]:
        self.mode = Mode.ANSWER
        text, self._buffer = self._buffer, ""
        held, self._held = tuple(self._held), []
        return self._answer(text, held if with_logprobs else None)

    def _answer(self, text: str, logprobs: tuple[TokenLogprob, ...] | None) -> list[Event]:
        if self.stopped_by is not None:
            return []
        out, self.stopped_by = self._stops.push(text)
        return [TextDelta(self.choice, out, logprobs)] if out or logprobs else []

    def _read_calls(self) -> list[Event]:
        events: list[Event] = []
        while self._buffer:
            if self._part is Part.SEEK:
                start = self._buffer.find("{")
                if start < 0:
                    self._buffer = ""  # markup between calls: tags, fences, newlines
                    break
                self._buffer = self._buffer[start:]
                self._part = Part.HEAD
            if self._part is Part.HEAD:
                head = _HEAD.match(self._buffer)
                if head is None:
                    break  # the name is still being written
                name = orjson.loads(f'"{head.group(1)}"')
                events.append(ToolCallStart(self.choice, self._calls, self._new_id(), name))
                self._buffer = self._buffer[head.end() :]
                self._extent = JsonExtent()
                self._part = Part.ARGUMENTS
            if self._part is Part.ARGUMENTS:
                end = self._extent.scan(self._buffer)
                fragment = self._buffer if end is None else self._buffer[:end]
                if fragment:
                    events.append(ToolCallDelta(self.choice, self._calls, fragment))
                self._buffer = "" if end is None else self._buffer[end:]
                if end is None:
                    break
                self._calls += 1
                self._part = Part.TAIL
            if self._part is Part.TAIL:
                close = self._buffer.find("}")
                if close < 0:
                    self._buffer = ""
                    break
                self._buffer = self._buffer[close + 1 :]
                self._part = Part.SEEK
        return events
