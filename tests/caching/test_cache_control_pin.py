"""A ``cache_control`` breakpoint pins its prompt prefix in the embedded engine's prefix cache, with
the real model. In-process: a scheduler with 2 slots and a small snapshot cache runs a marked and an
unmarked conversation, then enough distinct others to reuse every slot and evict every unpinned
snapshot; the marked prefix is restored from its pin, the unmarked one is evaluated again. Through
the gateway: the same on the wire (Anthropic's ``cache_creation_input_tokens`` /
``cache_read_input_tokens``, OpenAI's ``cached_tokens``) with all of its slots reused in between."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import anthropic

from gatewright.backends.cache_pins import cache_pins
from gatewright.backends.llamacpp._internals import Model
from gatewright.backends.llamacpp.backend import FairQueue, _default_parallel
from gatewright.backends.llamacpp.chat_template import ChatTemplate
from gatewright.backends.llamacpp.engine import Context
from gatewright.backends.llamacpp.prefix_cache import PrefixCache, common_prefix
from gatewright.backends.llamacpp.scheduler import Scheduler
from gatewright.core.types import CacheMark, CoreRequest, Message, Sampling, TextPart, ToolChoice, ToolSpec
from tests.caching.test_prompt_cache import WORDS
from tests.conftest import MODEL
from tests.engine.test_batching import Direct
from tests.support.procs import Gateway

STEP = 16  # the engine's reuse granularity


def notes(tag: str, words: int) -> str:
    """A system prompt sharing nothing but its first token or two with any other tag's."""
    rng = random.Random(tag)
    return f"{tag} notes: " + " ".join(rng.choice(WORDS) for _ in range(words)) + ". Answer briefly."


def conversation(system: str, question: str, marked: bool) -> CoreRequest:
    part = TextPart(system, CacheMark() if marked else None)
    return CoreRequest(
        model="m",
        messages=(Message("system", (part,)), Message("user", (TextPart(question),))),
        sampling=Sampling(max_tokens=1, temperature=0),
    )


class Engine:
    """The real model behind a scheduler on its own thread, fed jobs one at a time."""

    def __init__(self, model: Model, cache: PrefixCache) -> None:
        self.model, self.cache = model, cache
        self.template = ChatTemplate(model.metadata["tokenizer.chat_template"], "", model.token_text(model.token_eos()))
        self.scheduler = Scheduler(Context(model), 2, STEP, 512, 128, cache)
        self.queue = FairQueue(8)
        self.worker = threading.Thread(target=self.scheduler.run, args=(self.queue,), daemon=True)
        self.worker.start()

    def tokenize(self, request: CoreRequest) -> list[int]:
        return self.model.tokenize(self.template.render(request))

    def ask(self, request: CoreRequest) -> Direct:
        job = Direct(request, self.tokenize(request))
        job.pins = cache_pins(request, job.tokens, self.tokenize)
        self.queue.put("tests", job)
        assert job.finished.wait(600) and job.error is None
        return job

    def slot_holds(self, tokens: Sequence[int]) -> int:
        """The most of ``tokens`` (aligned) any slot's own cells hold."""
        return max(common_prefix(slot.cells, tokens) // STEP * STEP for slot in self.scheduler.slots)

    def snapshot_holds(self, tokens: Sequence[int]) -> int:
        return self.cache.best(tokens)[1]

    def close(self) -> None:
        self.queue.put("", None)
        self.worker.join(60)


def test_a_pinned_prefix_outlives_busy_slots_and_a_full_cache_an_unpinned_one_does_not(model: Model) -> None:
    # Room for about two of the other conversations' snapshots (~12 KB a token) beside the pin.
    cache = PrefixCache(capacity=8 * 2**20, min_tokens=64)
    engine = Engine(model, cache)
    try:
        pinned_system, plain_system = notes("Harbor", 60), notes("Meadow", 60)  # ~110 tokens each
        marked = engine.ask(conversation(pinned_system, "Name a colour.", marked=True))
        plain = engine.ask(conversation(plain_system, "Name a colour.", marked=False))
        (pin,) = marked.pins
        at = pin.tokens // STEP * STEP
        assert at >= 64 and marked.usage.cached_tokens == 0
        assert marked.usage.cache_write_tokens == at  # reported as written to the cache
        assert cache.pinned(marked.tokens[:at])
        # The control gets the same chance: its prompt is snapshotted (automatically, unpinned).
        plain_head = plain.tokens[: len(plain.tokens) - 1]
        assert engine.snapshot_holds(plain_head) >= at and plain.usage.cache_write_tokens == 0
        # Distinct conversations: twice as many as slots, each snapshot bigger than the pin.
        for tag in ("Copper", "Lantern", "Orchard", "Thunder"):
            engine.ask(conversation(notes(tag, 160), "Name a colour.", marked=False))
        # Neither prefix is in any slot now, and of the snapshots only the pinned one is left.
        for tokens in (marked.tokens, plain.tokens):
            assert engine.slot_holds(tokens) == 0
        assert engine.snapshot_holds(plain_head) < STEP
        assert engine.snapshot_holds(marked.tokens) == at and cache.pinned(marked.tokens[:at])
        again = engine.ask(conversation(pinned_system, "Name a number.", marked=True))
        assert again.usage.cached_tokens == at  # restored from the pin, not evaluated again
        assert again.usage.cache_write_tokens == 0  # held already: pinned again, nothing written
        unmarked = engine.ask(conversation(plain_system, "Name a number.", marked=False))
        assert unmarked.usage.cached_tokens == 0  # evaluated again: nothing of it was kept
    finally:
        engine.close()


def test_a_tool_mark_without_a_system_prompt_pins_the_tools_with_the_real_template(model: Model) -> None:
    # Qwen2.5's template reads messages[0] when there are tools: a cut with no message fails to render.
    template = ChatTemplate(model.metadata["tokenizer.chat_template"], "", model.token_text(model.token_eos()))
    tool = ToolSpec("weather", "Weather of a city", {"type": "object"}, cache=CacheMark())
    request = CoreRequest(
        model="m",
        messages=(Message("user", (TextPart("Name a colour."),)),),
        tools=(tool,),
        tool_choice=ToolChoice("auto"),
    )
    text = template.render(request)
    prompt = model.tokenize(text)
    (pin,) = cache_pins(request, prompt, lambda head: model.tokenize(template.render(head)))
    # The template's system turn with the tools, up to the user's text.
    user = text.index("<|im_start|>user\n") + len("<|im_start|>user\n")
    assert "</tools>" in text[:user] and pin.tokens == len(model.tokenize(text[:user]))


def anthropic_ask(client: anthropic.Anthropic, system: str, marked: bool, question: str) -> Any:
    block: dict[str, Any] = {"type": "text", "text": system}
    if marked:
        block["cache_control"] = {"type": "ephemeral"}
    return client.messages.create(
        model=MODEL, max_tokens=1, system=[block], messages=[{"role": "user", "content": question}]
    )


def test_on_the_wire_a_marked_prefix_is_read_from_the_cache_after_every_slot_served_others(
    gateway: Gateway,
) -> None:
    client = gateway.anthropic().with_options(timeout=900)
    openai_client = gateway.openai().with_options(timeout=900)
    run = uuid.uuid4().hex[:8]  # this run's prompts share nothing with earlier ones in the gateway
    # ~110 tokens: below the automatic snapshots' floor (prefix_cache_min_tokens, 256), so only a pin keeps it.
    pinned_system, plain_system = notes(f"Harbor {run}", 60), notes(f"Meadow {run}", 60)
    first = anthropic_ask(client, pinned_system, True, "Name a colour.")
    plain = anthropic_ask(client, plain_system, False, "Name a colour.")
    written = first.usage.cache_creation_input_tokens
    assert written >= 64 and written % STEP == 0 and not first.usage.cache_read_input_tokens
    assert not plain.usage.cache_creation_input_tokens
    # One distinct conversation per slot, one after the other: each takes the least recently used
    # slot, so every slot's cells are replaced.
    for slot in range(_default_parallel()):
        anthropic_ask(client, notes(f"Copper {run} {slot}", 60), False, "Name a colour.")
    # OpenAI's dialect, the same system part marked the same way: restored from the pin (no slot
    # holds any of it now), reported as cached_tokens.
    chat = openai_client.chat.completions.create(
        model=MODEL,
        max_tokens=1,
        messages=[
            {
                "role": "system",
                "content": [{"type": "text", "text": pinned_system, "cache_control": {"type": "ephemeral"}}],  # type: ignore[typeddict-unknown-key]
            },
            {"role": "user", "content": "Name a fruit."},
        ],
    )
    assert chat.usage is not None and chat.usage.prompt_tokens_details is not None
    assert chat.usage.prompt_tokens_details.cached_tokens == written
    # Anthropic's: read from the cache (the pin, or the slot that just restored it), nothing written.
    again = anthropic_ask(client, pinned_system, True, "Name a number.")
    assert again.usage.cache_read_input_tokens >= written and not again.usage.cache_creation_input_tokens
    unmarked = anthropic_ask(client, plain_system, False, "Name a number.")
    assert not unmarked.usage.cache_read_input_tokens  # not kept: evaluated again


def test_on_the_wire_a_marked_tool_without_a_system_prompt_is_pinned(gateway: Gateway) -> None:
    client = gateway.anthropic().with_options(timeout=900, max_retries=0)  # a 500 must not be retried away
    tool = {
        "name": "weather",
        "description": f"Weather of a city ({uuid.uuid4().hex[:8]}: nothing else shares this prefix)",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        "cache_control": {"type": "ephemeral"},
    }

    def ask(question: str) -> Any:
        return client.messages.create(
            model=MODEL, max_tokens=1, tools=[tool], messages=[{"role": "user", "content": question}]
        )

    first = ask("Name a colour.")
    assert first.usage.cache_creation_input_tokens > 0  # the tools' prefix was pinned
    again = ask("Name a number.")
    pinned = first.usage.cache_read_input_tokens + first.usage.cache_creation_input_tokens
    assert again.usage.cache_read_input_tokens >= pinned and not again.usage.cache_creation_input_tokens
