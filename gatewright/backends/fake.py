"""A deterministic in-process backend for tests of everything around the engine.

It echoes the last user message word by word (one "token" per word), honouring ``max_tokens``,
``n`` and stop sequences, and can fail on purpose. Behaviour is chosen in the catalog entry's
``options``: ``delay`` (seconds per token), ``fail_status`` (raise an upstream error of that
status before the first event), ``fail_after`` (raise after that many tokens). It never stands in
for the real engine in the engine's own tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gatewright.backends.options import FakeOptions
from gatewright.core.backend import CallContext
from gatewright.core.catalog import Deployment, ModelEntry
from gatewright.core.errors import UpstreamError
from gatewright.core.events import ChoiceEnd, Event, TextDelta, ToolCallDelta, ToolCallStart, UsageReport
from gatewright.core.ids import tool_call_id
from gatewright.core.types import CoreRequest, Usage


def _words(request: CoreRequest) -> list[str]:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text.split() or ["ok"]
    return ["ok"]


class FakeBackend:
    exact_prompt_count = True  # it bills exactly the words it counts (core.routing.counts_exactly)

    def __init__(self, deployment: Deployment, entry: ModelEntry, env: object = None) -> None:
        self.deployment = deployment
        self.entry = entry
        options = FakeOptions.model_validate(deployment.options)
        self.delay = options.delay
        self.fail_status = options.fail_status
        self.fail_after = options.fail_after
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def count_prompt_tokens(self, request: CoreRequest) -> int:
        return sum(len(m.text.split()) + 3 for m in request.messages)

    async def stream(self, request: CoreRequest, ctx: CallContext) -> AsyncIterator[Event]:
        if self.fail_status is not None:
            raise UpstreamError(f"fake failure {self.fail_status}", status=int(self.fail_status))
        self._in_flight += 1
        try:
            prompt = await self.count_prompt_tokens(request)
            ctx.usage = Usage(input_tokens=prompt)
            words = _words(request)
            limit = request.sampling.max_tokens or len(words)
            for choice in range(request.n):
                if request.tool_choice.mode in ("required", "named") and request.tools:
                    name = request.tool_choice.name or request.tools[0].name
                    yield ToolCallStart(choice, 0, tool_call_id(), name)
                    yield ToolCallDelta(choice, 0, '{"echo": "' + " ".join(words[:limit]) + '"}')
                    ctx.usage.output_tokens += min(limit, len(words))
                    yield ChoiceEnd(choice, "tool_calls")
                    continue
                reason = "stop"
                for k, word in enumerate(words):
                    if k >= limit:
                        reason = "length"
                        break
                    if self.fail_after is not None and k >= int(self.fail_after):
                        raise UpstreamError("fake failure mid-stream", status=502)
                    text = word if k == 0 else " " + word
                    if any(s in text for s in request.sampling.stop):
                        break
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    ctx.usage.output_tokens += 1
                    yield TextDelta(choice, text)
                yield ChoiceEnd(choice, reason)  # type: ignore[arg-type]
            yield UsageReport(ctx.usage)
        finally:
            self._in_flight -= 1
