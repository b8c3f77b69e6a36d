"""Cache breakpoints → prompt positions, with a character-level tokenizer over a ChatML-like
rendering (the real template's arithmetic is the same; the engine tests use the real one)."""

from __future__ import annotations

from gatewright.backends.cache_pins import Pin, cache_pins
from gatewright.core.types import CacheMark, CoreRequest, Message, TextPart, ToolChoice, ToolSpec


def render(request: CoreRequest) -> list[int]:
    text = ""
    if request.tools:
        text += "<tools>" + ",".join(t.name for t in request.tools) + "</tools>"
    for message in request.messages:
        text += f"<{message.role}>" + message.text + "<end>"
    return [ord(c) for c in text + "<assistant>"]


def test_each_breakpoint_pins_the_prompt_up_to_its_part() -> None:
    request = CoreRequest(
        model="m",
        messages=(
            Message("system", (TextPart("Manual.", CacheMark("1h")), TextPart(" Notes."))),
            Message("user", (TextPart("Question", CacheMark()),)),
        ),
    )
    prompt = render(request)
    pins = cache_pins(request, prompt, render)
    # A mark on the last part pins the whole prompt (the engine keeps all of it but the last token).
    assert pins == (Pin(len("<system>Manual."), 3600.0), Pin(len(prompt), 300.0))


def test_a_tool_mark_pins_the_system_prompt_with_the_tools_and_no_mark_pins_nothing() -> None:
    tool = ToolSpec("weather", None, {"type": "object"}, cache=CacheMark())
    request = CoreRequest(
        model="m",
        messages=(Message("system", (TextPart("S"),)), Message("user", (TextPart("Q"),))),
        tools=(tool,),
        tool_choice=ToolChoice("auto"),
    )
    prompt = render(request)
    # Shared up to where the cut rendering and the whole one part ("<assistant>" vs "<user>").
    assert cache_pins(request, prompt, render) == (Pin(len("<tools>weather</tools><system>S<end><"), 300.0),)
    plain = CoreRequest(model="m", messages=request.messages)
    assert cache_pins(plain, render(plain), render) == ()
