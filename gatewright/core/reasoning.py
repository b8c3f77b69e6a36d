"""Split reasoning a model writes inside tags (``<think>…</think>``) out of its text.

Works on the event stream, so tags cut across chunks are handled: text that might be the start of
a tag is held back until the next chunk decides it. A backend that cannot tell reasoning tokens
from the rest gets them estimated from the split (output tokens in proportion to characters),
and the usage is then marked ``estimated``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from gatewright.core.events import ChoiceEnd, Event, ReasoningDelta, TextDelta, UsageReport


class TagSplitter:
    """Incremental splitter for one choice: feed text, get (is_reasoning, text) segments."""

    __slots__ = ("_pending", "close_tag", "inside", "open_tag")

    def __init__(self, open_tag: str, close_tag: str, inside: bool = False) -> None:
        self.open_tag = open_tag
        self.close_tag = close_tag
        self.inside = inside
        self._pending = ""

    def feed(self, text: str) -> list[tuple[bool, str]]:
        out: list[tuple[bool, str]] = []
        buffer = self._pending + text
        self._pending = ""
        while buffer:
            tag = self.close_tag if self.inside else self.open_tag
            at = buffer.find(tag)
            if at >= 0:
                if at:
                    out.append((self.inside, buffer[:at]))
                buffer = buffer[at + len(tag) :]
                self.inside = not self.inside
                continue
            keep = _partial_suffix(buffer, tag)
            if len(buffer) > keep:
                out.append((self.inside, buffer[: len(buffer) - keep]))
            self._pending = buffer[len(buffer) - keep :]
            break
        return out

    def flush(self) -> list[tuple[bool, str]]:
        pending, self._pending = self._pending, ""
        return [(self.inside, pending)] if pending else []


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def _emit(choice: int, segments: list[tuple[bool, str]]) -> list[TextDelta | ReasoningDelta]:
    return [ReasoningDelta(choice, t) if r else TextDelta(choice, t) for r, t in segments if t]


async def split_reasoning(
    events: AsyncIterator[Event], tags: tuple[str, str], starts_inside: bool = False
) -> AsyncIterator[Event]:
    splitters: dict[int, TagSplitter] = {}
    chars = [0, 0]  # reasoning, text
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                splitter = splitters.get(event.choice)
                if splitter is None:
                    splitter = splitters[event.choice] = TagSplitter(*tags, inside=starts_inside)
                for out in _emit(event.choice, splitter.feed(event.text)):
                    chars[isinstance(out, TextDelta)] += len(out.text)
                    yield out
                continue
            if isinstance(event, ChoiceEnd) and event.choice in splitters:
                for out in _emit(event.choice, splitters[event.choice].flush()):
                    chars[isinstance(out, TextDelta)] += len(out.text)
                    yield out
            if isinstance(event, UsageReport) and not event.usage.reasoning_tokens and chars[0]:
                share = chars[0] / (chars[0] + chars[1])
                usage = replace(event.usage, reasoning_tokens=round(event.usage.output_tokens * share), estimated=True)
                event = UsageReport(usage, event.cost)
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]
