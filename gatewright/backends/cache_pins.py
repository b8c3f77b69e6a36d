"""Where a request's prompt-cache breakpoints (``cache_control``) fall in the engine's prompt.

A breakpoint says "the prompt up to here is worth keeping". On the embedded engine that prefix is
pinned in the prefix cache for the breakpoint's TTL (Anthropic's: 5 minutes, or 1 hour), whatever
its length, so a later request sharing it restores it instead of evaluating it again.

The engine's prompt is a chat template's rendering, so a breakpoint's token position is found by
rendering the conversation cut just after the marked part and taking the tokens it shares with the
whole prompt: exact up to the marked text, whatever the template puts around messages. A mark on a
tool definition pins the system prompt with the tool definitions (templates render tools there).
A breakpoint is a hint: one whose cut conversation the template refuses pins nothing, and the
request runs as if it were not marked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from gatewright.core.types import CoreRequest, Message

log = logging.getLogger("gatewright.backends.cache_pins")
# Anthropic's cache lifetimes (prompt-caching guide): 5 minutes unless the mark asks for an hour.
TTL_SECONDS: dict[str | None, float] = {None: 300.0, "5m": 300.0, "1h": 3600.0}
# Anthropic refuses a request with more than 4 breakpoints. Each one costs a rendering and a
# tokenization of the prompt up to it, so a request marking every part would cost quadratic work
# (400 marks: seconds of CPU): only the first 4 are pinned, the tools' counting as one.
MAX_CUTS = 4


@dataclass(frozen=True, slots=True, order=True)
class Pin:
    tokens: int  # keep the first this many prompt tokens
    ttl: float  # seconds


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    size = min(len(a), len(b))
    for i in range(size):
        if a[i] != b[i]:
            return i
    return size


def _cut(request: CoreRequest, message: int, part: int) -> CoreRequest:
    """The conversation up to and including ``messages[message].parts[part]``."""
    marked = request.messages[message]
    head: tuple[Message, ...] = (*request.messages[:message], replace(marked, parts=marked.parts[: part + 1]))
    return replace(request, messages=head)


def cache_pins(
    request: CoreRequest, prompt: Sequence[int], tokenize: Callable[[CoreRequest], Sequence[int]]
) -> tuple[Pin, ...]:
    """The prompt prefixes to pin, shortest first (none when the request carries no breakpoint);
    the first ``MAX_CUTS`` breakpoints only."""
    cuts: list[tuple[CoreRequest, float]] = []
    tool_marks = [tool.cache.ttl for tool in request.tools if tool.cache is not None]
    if tool_marks:  # one cut serves every marked tool: the tools render together, before the messages
        # The system prompt, then an empty user turn: some templates index the first message or
        # refuse a conversation without a user turn (Qwen2.5's fails on tools and no message).
        systems = tuple(m for m in request.messages if m.role == "system")
        tools_cut = replace(request, messages=(*systems, Message("user", ())))
        cuts.append((tools_cut, max(TTL_SECONDS[ttl] for ttl in tool_marks)))
    for message, part in request.cache_breakpoints[: MAX_CUTS - len(cuts)]:
        mark = getattr(request.messages[message].parts[part], "cache", None)
        cuts.append((_cut(request, message, part), TTL_SECONDS[mark.ttl if mark is not None else None]))
    pins: dict[int, float] = {}
    for head, ttl in cuts:
        try:
            cut = tokenize(head)
        except Exception as error:  # the whole prompt rendered: a cut the template refuses only loses its pin
            log.warning("a cache_control breakpoint is not pinned: its cut prompt does not render: %r", error)
            continue
        length = shared_prefix(cut, prompt)
        if length:
            pins[length] = max(pins.get(length, 0.0), ttl)
    return tuple(sorted(Pin(length, ttl) for length, ttl in pins.items()))
