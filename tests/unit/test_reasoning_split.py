from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gatewright.core.events import ChoiceEnd, Event, ReasoningDelta, TextDelta, UsageReport
from gatewright.core.reasoning import TagSplitter, split_reasoning
from gatewright.core.types import Usage

TEXT = "<think>step one, then two</think>The answer is 4."


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
def test_splitter_any_cut(size: int) -> None:
    splitter = TagSplitter("<think>", "</think>")
    out: list[tuple[bool, str]] = []
    for at in range(0, len(TEXT), size):
        out.extend(splitter.feed(TEXT[at : at + size]))
    out.extend(splitter.flush())
    assert "".join(t for r, t in out if r) == "step one, then two"
    assert "".join(t for r, t in out if not r) == "The answer is 4."


def test_text_that_only_looks_like_a_tag_is_kept() -> None:
    splitter = TagSplitter("<think>", "</think>")
    out = splitter.feed("a <thin") + splitter.feed("g> b") + splitter.flush()
    assert "".join(t for _, t in out) == "a <thing> b" and not any(r for r, _ in out)


def test_starts_inside() -> None:
    splitter = TagSplitter("<think>", "</think>", inside=True)
    out = splitter.feed("hmm</think>ok") + splitter.flush()
    assert out == [(True, "hmm"), (False, "ok")]


async def test_stream_estimates_reasoning_tokens() -> None:
    async def events() -> AsyncIterator[Event]:
        for piece in ("<thi", "nk>abcdef", "</think>gh"):
            yield TextDelta(0, piece)
        yield ChoiceEnd(0, "stop")
        yield UsageReport(Usage(input_tokens=5, output_tokens=8))

    out = [e async for e in split_reasoning(events(), ("<think>", "</think>"))]
    assert "".join(e.text for e in out if isinstance(e, ReasoningDelta)) == "abcdef"
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "gh"
    usage = next(e for e in out if isinstance(e, UsageReport)).usage
    assert usage.reasoning_tokens == 6 and usage.estimated  # 8 tokens × 6/8 characters
