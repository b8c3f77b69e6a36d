"""The Response builder without a gateway: neutral events in, OpenAI's stream events and Response
object out, every event checked against the spec. Covers what real backends rarely produce on
demand: logprobs, an upstream interleaving two calls' arguments, a content-filtered end."""

from __future__ import annotations

import json
from typing import Any

from gatewright.api.responses.stream import ResponseBuilder
from gatewright.core.events import (
    ChoiceEnd,
    Event,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from gatewright.core.types import Cost, TokenLogprob, TopLogprob, Usage
from tests.responses.wire import check, check_stream

BASE: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "in_progress",
    "completed_at": None,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "model": "m",
    "output": [],
    "parallel_tool_calls": True,
    "metadata": {},
    "tool_choice": "auto",
    "tools": [],
    "temperature": 1.0,
    "top_p": 1.0,
}


def run(events: list[Event]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    builder = ResponseBuilder(dict(BASE), emit=True)
    frames = builder.start()
    for event in events:
        frames += builder.add(event)
    closing, response = builder.finish()
    parsed = check_stream(b"".join(frames + closing))
    check("Response", response)
    quiet = ResponseBuilder(dict(BASE), emit=False)  # the non-streaming fold: no frames, same object
    for event in events:
        assert quiet.add(event) == []
    ids_apart = [{k: v for k, v in item.items() if k != "id"} for item in response["output"]]
    assert [{k: v for k, v in item.items() if k != "id"} for item in quiet.finish()[1]["output"]] == ids_apart
    return parsed, response


def test_interleaved_calls_end_whole_and_reasoning_comes_first() -> None:
    events: list[Event] = [
        ReasoningDelta(0, "think"),
        ToolCallStart(0, 0, "call_a", "f"),
        ToolCallDelta(0, 0, '{"x": '),
        ToolCallStart(0, 1, "call_b", "g"),
        ToolCallDelta(0, 1, '{"y": 2}'),
        ToolCallDelta(0, 0, "1}"),  # the first call's last fragment, after the second began
        ChoiceEnd(0, "tool_calls"),
        UsageReport(Usage(input_tokens=9, output_tokens=7, reasoning_tokens=1), Cost(30, 0.000015)),
    ]
    parsed, response = run(events)
    assert [item["type"] for item in response["output"]] == ["reasoning", "function_call", "function_call"]
    assert [json.loads(item["arguments"]) for item in response["output"][1:]] == [{"x": 1}, {"y": 2}]
    assert response["status"] == "completed" and response["meta"] == {
        "usage": {"credits_used": 30, "usd_spent": 1.5e-05}
    }
    assert response["usage"]["output_tokens_details"]["reasoning_tokens"] == 1
    assert [e["sequence_number"] for e in parsed] == list(range(len(parsed)))


def test_logprobs_and_a_content_filter() -> None:
    top = (TopLogprob("Hi", -0.1, (72, 105)), TopLogprob("Hey", -2.3, (72, 101, 121)))
    events: list[Event] = [
        TextDelta(0, "Hi", (TokenLogprob("Hi", -0.1, (72, 105), top),)),
        TextDelta(0, "!", (TokenLogprob("!", -0.5, (33,)),)),
        ChoiceEnd(0, "content_filter"),
        UsageReport(Usage(input_tokens=3, output_tokens=2)),
    ]
    parsed, response = run(events)
    assert parsed[-1]["type"] == "response.incomplete"
    assert response["incomplete_details"] == {"reason": "content_filter"} and "meta" not in response
    (part,) = response["output"][0]["content"]
    assert part["text"] == "Hi!" and [lp["token"] for lp in part["logprobs"]] == ["Hi", "!"]
    assert part["logprobs"][0]["top_logprobs"][1] == {"token": "Hey", "logprob": -2.3, "bytes": [72, 101, 121]}
    delta = next(e for e in parsed if e["type"] == "response.output_text.delta")
    assert delta["logprobs"][0]["top_logprobs"][0] == {"token": "Hi", "logprob": -0.1}


def test_other_choices_are_ignored() -> None:
    _, response = run([TextDelta(0, "a"), TextDelta(1, "b"), ChoiceEnd(0, "stop"), ChoiceEnd(1, "stop")])
    assert response["output_text"] == "a"
