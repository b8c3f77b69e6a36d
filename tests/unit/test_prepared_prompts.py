"""The embedded backend renders and tokenizes a request's prompt once: counting its tokens and then
streaming the prepared copy of the same request reuse that work."""

from __future__ import annotations

from dataclasses import replace

from gatewright.backends.llamacpp.backend import PreparedPrompts
from gatewright.core.types import CoreRequest, Message, Sampling, TextPart, ToolChoice


def request(text: str) -> CoreRequest:
    return CoreRequest(model="m", messages=(Message("user", (TextPart(text),)),))


def test_the_prepared_copy_of_a_request_finds_its_tokens() -> None:
    built: list[CoreRequest] = []

    def build(r: CoreRequest) -> list[int]:
        built.append(r)
        return [len(built)]

    prompts = PreparedPrompts(size=2)
    counted = request("hello")
    assert prompts.get(counted, build) == [1]
    # What the pipeline streams: the same messages with sampling defaults filled in.
    streamed = replace(counted, sampling=Sampling(max_tokens=64, temperature=0.7))
    assert prompts.get(streamed, build) == [1] and len(built) == 1
    # The same messages with another tool choice, or equal text in other objects, are prepared anew.
    assert prompts.get(replace(counted, tool_choice=ToolChoice("required")), build) == [2]
    assert prompts.get(request("hello"), build) == [3]


def test_it_remembers_a_bounded_number_of_requests() -> None:
    prompts = PreparedPrompts(size=2)
    first, second, third = request("a"), request("b"), request("c")
    for r in (first, second, third):
        prompts.get(r, lambda r: [1])
    calls: list[int] = []
    prompts.get(first, lambda r: calls.append(1) or [2])
    assert calls == [1]  # the oldest was forgotten
