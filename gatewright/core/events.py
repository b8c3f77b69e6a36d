"""The one stream every backend yields and every dialect renders.

A backend turns a ``CoreRequest`` into an async iterator of these events; the non-streaming answer is
the same stream folded by ``core.accumulate``. Deltas carry the choice index so ``n > 1`` streams can
interleave; tool calls announce themselves once (``ToolCallStart``) and then send argument fragments.
"""

from __future__ import annotations

from dataclasses import dataclass

from gatewright.core.types import Cost, FinishReason, TokenLogprob, Usage


@dataclass(frozen=True, slots=True)
class TextDelta:
    choice: int
    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    choice: int
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningSignature:
    """The provider's signature of the reasoning just streamed (Anthropic's ``signature_delta``):
    it ends that reasoning block, and must go back with it in a later turn."""

    choice: int
    signature: str


@dataclass(frozen=True, slots=True)
class RedactedReasoning:
    """A whole block of encrypted reasoning (Anthropic's ``redacted_thinking``), passed through."""

    choice: int
    data: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    choice: int
    index: int  # dense per choice: 0, 1, 2 ...
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    choice: int
    index: int
    arguments: str


@dataclass(frozen=True, slots=True)
class ChoiceEnd:
    choice: int
    finish_reason: FinishReason
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Final usage of the whole request; the pipeline adds the cost before dialects see it."""

    usage: Usage
    cost: Cost | None = None


Event = (
    TextDelta
    | ReasoningDelta
    | ReasoningSignature
    | RedactedReasoning
    | ToolCallStart
    | ToolCallDelta
    | ChoiceEnd
    | UsageReport
)
