"""Turning what a local model writes into neutral events.

A shaper receives decoded text as it is generated (already cut at stop sequences) and returns
events. Plain text becomes ``TextDelta``; constrained modes (tool calls, issue #4) install their own
shaper that recognises the call syntax the grammar forces.
"""

from __future__ import annotations

from typing import Protocol

from gatewright.core.events import Event, TextDelta
from gatewright.core.types import FinishReason, TokenLogprob


class Shaper(Protocol):
    def feed(self, text: str, logprobs: tuple[TokenLogprob, ...] | None) -> list[Event]: ...

    def finish(self, reason: FinishReason) -> tuple[list[Event], FinishReason]:
        """Flush what is held back; may change the finish reason (e.g. to ``tool_calls``)."""
        ...


class TextShaper:
    __slots__ = ("choice",)

    def __init__(self, choice: int) -> None:
        self.choice = choice

    def feed(self, text: str, logprobs: tuple[TokenLogprob, ...] | None) -> list[Event]:
        return [TextDelta(self.choice, text, logprobs)] if text or logprobs else []

    def finish(self, reason: FinishReason) -> tuple[list[Event], FinishReason]:
        return [], reason
