"""``ToolCallShaper``: the text the grammar lets the model write, fed in pieces as the engine
decodes it, becomes text or streamed tool-call events."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable

import pytest

from gatewright.backends.llamacpp.engine import StopScanner
from gatewright.backends.llamacpp.shaping import ToolCallShaper
from gatewright.core.events import Event, TextDelta, ToolCallDelta, ToolCallStart
from gatewright.core.types import FinishReason, TokenLogprob

OPENERS = ("<tool_call>", "```json", "{")
PARIS = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
TRICKY = '{"name": "note", "arguments": {"text": "a } and a \\" and {[", "tags": [{"k": 1}]}}'


def shaper(answer: bool = True, stops: tuple[str, ...] = ()) -> ToolCallShaper:
    ids = (f"call_{n}" for n in itertools.count())
    return ToolCallShaper(0, OPENERS, answer, StopScanner(stops), new_id=lambda: next(ids))


def run(s: ToolCallShaper, pieces: Iterable[str], reason: FinishReason = "stop") -> tuple[list[Event], FinishReason]:
    events: list[Event] = []
    for piece in pieces:
        events += s.feed(piece, None)
    tail, final = s.finish(reason)
    return events + tail, final


def calls(events: list[Event]) -> list[tuple[str, str, str]]:
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [e.index for e in starts] == list(range(len(starts)))  # dense, per choice
    return [
        (s.id, s.name, "".join(d.arguments for d in events if isinstance(d, ToolCallDelta) and d.index == s.index))
        for s in starts
    ]


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize(
    "text",
    [f"<tool_call>\n{PARIS}\n</tool_call>", f"```json\n{PARIS}\n```", PARIS],
)
def test_every_call_form_gives_one_call_whatever_the_chunking(text: str, size: int) -> None:
    events, reason = run(shaper(), chunks(text, size))
    assert reason == "tool_calls"
    assert calls(events) == [("call_0", "get_weather", '{"city": "Paris", "unit": "celsius"}')]
    assert not any(isinstance(e, TextDelta) for e in events)


def test_arguments_stream_while_generated_and_braces_in_strings_do_not_end_them() -> None:
    s = shaper(answer=False)
    pieces = chunks(TRICKY, 4)
    deltas = [e for piece in pieces for e in s.feed(piece, None) if isinstance(e, ToolCallDelta)]
    assert len(deltas) > 3  # fragments arrive as the tokens do, not at the end
    (_, name, arguments) = calls(run(shaper(answer=False), pieces)[0])[0]
    assert name == "note" and json.loads(arguments) == {"text": 'a } and a " and {[', "tags": [{"k": 1}]}


def test_parallel_calls_get_their_own_index_and_id() -> None:
    text = f"<tool_call>\n{PARIS}\n</tool_call>\n<tool_call>\n{TRICKY}\n</tool_call>\n"
    events, reason = run(shaper(), chunks(text, 5))
    assert reason == "tool_calls"
    assert [(i, n) for i, n, _ in calls(events)] == [("call_0", "get_weather"), ("call_1", "note")]


def test_text_answers_pass_through_once_they_cannot_be_a_call() -> None:
    s = shaper()
    assert s.feed("`", None) == []  # might be a json fence
    assert s.feed("``", None) == []
    events = s.feed("python\n", None)
    assert events == [TextDelta(0, "```python\n")]
    assert s.feed("x = 1", None) == [TextDelta(0, "x = 1")]
    assert s.finish("stop") == ([], "stop")


def test_an_answer_that_ends_like_an_opener_is_still_text() -> None:
    events, reason = run(shaper(), ["``"])
    assert events == [TextDelta(0, "``")] and reason == "stop"


def test_held_logprobs_travel_with_the_text() -> None:
    s = shaper()
    first = TokenLogprob("`", -0.1, (96,))
    second = TokenLogprob("hi", -0.2, (104, 105))
    assert s.feed("`", (first,)) == []
    assert s.feed("hi", (second,)) == [TextDelta(0, "`hi", (first, second))]


def test_stop_sequences_cut_a_text_answer_and_say_so() -> None:
    s = shaper(stops=("END",))
    events = s.feed("Hello E", None) + s.feed("ND and more", None)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello "
    assert s.stopped_by == "END"
    assert s.feed("ignored", None) == []


def test_stop_sequences_never_cut_a_call() -> None:
    events, reason = run(shaper(stops=('"', "}")), chunks(PARIS, 3))
    assert reason == "tool_calls" and calls(events)[0][2] == '{"city": "Paris", "unit": "celsius"}'


def test_a_call_cut_by_max_tokens_finishes_with_length() -> None:
    head = '{"name": "get_weather", "arguments": '
    events, reason = run(shaper(), [PARIS[:50]], reason="length")
    assert reason == "length"
    assert [(n, a) for _, n, a in calls(events)] == [("get_weather", PARIS[len(head) : 50])]


def test_a_call_cut_before_its_name_is_complete_makes_no_event() -> None:
    events, reason = run(shaper(), ['{"name": "get_wea'], reason="length")
    assert events == [] and reason == "length"
