"""Fold a stream of events into one response: the only path a non-streaming answer takes."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
from gatewright.core.types import Choice, Cost, ToolCall, Usage


class Accumulator:
    """Collects events per choice; also used by streaming paths that need the final picture."""

    __slots__ = ("_reasoning", "_text", "choices", "cost", "usage")

    def __init__(self, n: int = 1) -> None:
        self.choices = [Choice(index=i) for i in range(n)]
        self.usage = Usage()
        self.cost: Cost | None = None
        self._text: list[list[str]] = [[] for _ in range(n)]
        self._reasoning: list[list[str]] = [[] for _ in range(n)]

    def _choice(self, index: int) -> Choice:
        while index >= len(self.choices):
            self.choices.append(Choice(index=len(self.choices)))
            self._text.append([])
            self._reasoning.append([])
        return self.choices[index]

    def add(self, event: Event) -> None:
        if type(event) is TextDelta:  # most events: a straight path, no pattern matching
            i = event.choice
            if i >= len(self.choices):
                self._choice(i)
            self._text[i].append(event.text)
            if event.logprobs is not None:
                choice = self.choices[i]
                if choice.logprobs is None:
                    choice.logprobs = []
                choice.logprobs.extend(event.logprobs)
            return
        match event:
            case TextDelta(choice=i, text=text, logprobs=logprobs):
                choice = self._choice(i)
                self._text[i].append(text)
                if logprobs is not None:
                    if choice.logprobs is None:
                        choice.logprobs = []
                    choice.logprobs.extend(logprobs)
            case ReasoningDelta(choice=i, text=text):
                self._choice(i)
                self._reasoning[i].append(text)
            case ReasoningSignature(choice=i, signature=signature):
                self._choice(i).reasoning_signature = signature
            case RedactedReasoning(choice=i, data=data):
                self._choice(i).redacted_reasoning.append(data)
            case ToolCallStart(choice=i, id=call_id, name=name):
                self._choice(i).tool_calls.append(ToolCall(id=call_id, name=name))
            case ToolCallDelta(choice=i, index=k, arguments=fragment):
                self._choice(i).tool_calls[k].arguments += fragment
            case ChoiceEnd(choice=i, finish_reason=reason, stop_sequence=stop_sequence):
                choice = self._choice(i)
                choice.finish_reason = reason
                choice.stop_sequence = stop_sequence
            case UsageReport(usage=usage, cost=cost):
                self.usage = usage
                self.cost = cost

    def finish(self) -> list[Choice]:
        for i, choice in enumerate(self.choices):
            choice.text = "".join(self._text[i])
            choice.reasoning = "".join(self._reasoning[i])
            if choice.finish_reason is None:
                choice.finish_reason = "stop"
        return self.choices


async def collect(events: AsyncIterator[Event], n: int = 1) -> Accumulator:
    acc = Accumulator(n)
    async for event in events:
        acc.add(event)
    acc.finish()
    return acc
