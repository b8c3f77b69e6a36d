"""Cache breakpoints → prompt positions, with a character-level tokenizer over a ChatML-like
rendering (the real template's arithmetic is the same; the engine tests use the real one)."""

from __future__ import annotations

from gatewright.backends.cache_pins import Pin, cache_pins
from gatewright.backends.llamacpp.prefix_cache import PrefixCache
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
    # The cut is the system prompt and an empty user turn: shared up to the user's text.
    assert cache_pins(request, prompt, render) == (Pin(len("<tools>weather</tools><system>S<end><user>"), 300.0),)
    plain = CoreRequest(model="m", messages=request.messages)
    assert cache_pins(plain, render(plain), render) == ()


def render_like_qwen(request: CoreRequest) -> list[int]:
    """Qwen2.5's template reads ``messages[0]`` when there are tools: no message is an error."""
    if request.tools and not request.messages:
        raise IndexError("list object has no element 0")
    return render(request)


def test_a_tool_mark_without_a_system_prompt_pins_the_tools() -> None:
    tool = ToolSpec("weather", None, {"type": "object"}, cache=CacheMark("1h"))
    request = CoreRequest(
        model="m", messages=(Message("user", (TextPart("Q"),)),), tools=(tool,), tool_choice=ToolChoice("auto")
    )
    prompt = render_like_qwen(request)
    assert cache_pins(request, prompt, render_like_qwen) == (Pin(len("<tools>weather</tools><user>"), 3600.0),)


def test_a_breakpoint_whose_cut_the_template_refuses_pins_nothing_and_fails_nothing() -> None:
    request = CoreRequest(
        model="m",
        messages=(
            Message("system", (TextPart("Manual.", CacheMark()),)),
            Message("user", (TextPart("Question", CacheMark()),)),
        ),
    )
    prompt = render(request)

    def refuses_a_cut_without_a_user_turn(head: CoreRequest) -> list[int]:
        if all(message.role != "user" for message in head.messages):
            raise ValueError("No user query found in messages.")  # as Qwen3's template says
        return render(head)

    # The system breakpoint's cut is refused: only the user one is pinned.
    assert cache_pins(request, prompt, refuses_a_cut_without_a_user_turn) == (Pin(len(prompt), 300.0),)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cells(n: int) -> bytes:
    return bytes(n)


def test_pinned_snapshots_are_evicted_last_until_their_ttl_passes() -> None:
    clock = Clock()
    cache = PrefixCache(capacity=300, min_tokens=4, pin_capacity=150, clock=clock)
    assert cache.pin([1, 2], 300.0, lambda: cells(100))  # written: under min_tokens, kept all the same
    for first in range(10, 60, 10):  # five ordinary snapshots of 100 bytes: room for two beside the pin
        cache.save([first, 1, 2, 3], cells(100))
    assert cache.holds([1, 2]) and cache.pinned([1, 2])
    assert [cache.holds([first, 1, 2, 3]) for first in range(10, 60, 10)] == [False, False, False, True, True]
    assert cache.size == 300 and cache.pinned_size == 100
    # Pinned again before it expires: kept for the longer of the two deadlines, nothing written.
    assert not cache.pin([1, 2], 60.0, lambda: cells(999))
    clock.now += 299.0
    assert cache.pinned([1, 2])
    clock.now += 2.0  # past its TTL: an ordinary snapshot now, evicted in its LRU turn
    assert not cache.pinned([1, 2]) and cache.holds([1, 2]) and cache.pinned_size == 0
    for first in (70, 80, 90):
        cache.save([first, 1, 2, 3], cells(100))
    assert not cache.holds([1, 2]) and len(cache) == 3


def test_pins_hold_at_most_their_share_the_least_recently_used_giving_way() -> None:
    clock = Clock()
    cache = PrefixCache(capacity=400, min_tokens=4, pin_capacity=200, clock=clock)
    assert cache.pin([1], 3600.0, lambda: cells(100))
    assert cache.pin([2], 300.0, lambda: cells(100))
    snapshot, _ = cache.best([1, 5])
    assert snapshot is not None
    cache.used(snapshot)  # [1] was restored last: [2] gives way to the next pin
    assert cache.pin([3], 300.0, lambda: cells(100))
    assert [cache.pinned([k]) for k in (1, 2, 3)] == [True, False, True] and cache.pinned_size == 200
    assert cache.holds([2])  # unpinned, not dropped: it ages out as an ordinary snapshot
    assert not cache.pin([4], 300.0, lambda: cells(201))  # bigger than the pins' share: not pinned
    assert not cache.holds([4])
    # What the scheduler asks before cutting a prompt back to a pin: would it fit (100 bytes a token)?
    assert cache.can_pin(2) and not cache.can_pin(3)
    assert not PrefixCache(1000, 16, pin_capacity=0).can_pin(1)  # prefix_cache_pin_mb = 0: no pins
    for first in range(10, 60, 10):
        cache.save([first, 1, 2, 3], cells(100))
    assert cache.holds([1]) and cache.holds([3]) and not cache.holds([2])
    assert cache.size <= 400
    # Half of the capacity unless told, and never more than all of it.
    assert PrefixCache(1000, 16).pin_capacity == 500
    assert PrefixCache(1000, 16, pin_capacity=5000).pin_capacity == 1000


def test_at_most_four_breakpoints_are_pinned_the_tools_counting_as_one() -> None:
    tools = tuple(ToolSpec(f"t{i}", None, {"type": "object"}, cache=CacheMark("1h" if i else None)) for i in range(3))
    messages = tuple(Message("user", (TextPart(f"m{i}.", CacheMark()),)) for i in range(500))
    request = CoreRequest(model="m", messages=messages, tools=tools, tool_choice=ToolChoice("auto"))
    prompt = render(request)
    renders: list[CoreRequest] = []

    def counted(head: CoreRequest) -> list[int]:
        renders.append(head)
        return render(head)

    pins = cache_pins(request, prompt, counted)
    assert len(renders) == 4  # not one per mark: each is a rendering of the prompt up to it
    tools_text = "<tools>t0,t1,t2</tools>"

    def through(n: int) -> int:  # the first n messages, to where the next turn's role starts
        return len(tools_text + "".join(f"<user>m{i}.<end>" for i in range(n)) + "<")

    # The tools' cut with the longest of their TTLs, then the first three messages' breakpoints.
    assert pins == (Pin(len(tools_text + "<user>"), 3600.0), *(Pin(through(n), 300.0) for n in (1, 2, 3)))
