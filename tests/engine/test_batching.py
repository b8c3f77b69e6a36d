"""Continuous batching on the embedded engine, with the real model: requests that run together all
complete, keep their own guarantees (a grammar binds only its own sequence), are billed exactly
what each produced, and a caller that leaves frees its slot."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import openai

from gatewright.backends.llamacpp._internals import Model
from gatewright.backends.llamacpp.backend import FairQueue, Job
from gatewright.backends.llamacpp.chat_template import ChatTemplate
from gatewright.backends.llamacpp.engine import ChoicePlan, Context
from gatewright.backends.llamacpp.scheduler import Scheduler
from gatewright.backends.llamacpp.shaping import TextShaper
from gatewright.backends.weights import assemble
from gatewright.core.billing import price
from gatewright.core.catalog import Prices
from gatewright.core.events import ChoiceEnd, Event, TextDelta
from gatewright.core.types import CoreRequest, Message, Sampling, TextPart, Usage
from tests.conftest import MODEL
from tests.engine.conftest import WEATHER, WEATHER_PARAMETERS
from tests.support.procs import Gateway
from tests.upstream.conftest import Store

PRICES = Prices(input=0.02, cached_input=0.01, output=0.06)  # the default catalog's local model
TOPICS = ("rivers", "lanterns", "copper", "orchards")


async def test_concurrent_streams_all_complete_and_each_is_billed_exactly(
    aclient: openai.AsyncOpenAI, gateway: Gateway
) -> None:
    async def one(topic: str, seed: int) -> tuple[str, str, int, str | None, Any]:
        raw = await aclient.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Write two short sentences about {topic}."}],
            max_tokens=24,
            seed=seed,
            stream=True,
            stream_options={"include_usage": True},
            logprobs=True,
        )
        text, tokens, finish, usage = "", 0, None, None
        async for chunk in raw.parse():  # type: ignore[attr-defined]
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                tokens += len(choice.logprobs.content or []) if choice.logprobs else 0
                finish = choice.finish_reason or finish
        return raw.headers["x-request-id"], text, tokens, finish, usage

    results = await asyncio.gather(*(one(topic, seed) for seed, topic in enumerate(TOPICS)))
    store = Store(gateway.data_dir / "gatewright.db")
    for request_id, text, tokens, finish, usage in results:
        assert text.strip() and finish in ("stop", "length")
        assert usage is not None and usage.completion_tokens == tokens > 0  # one logprob per token billed
        assert finish == "stop" or tokens == 24
        record = store.usage(request_id)
        assert (record["input_tokens"], record["output_tokens"]) == (usage.prompt_tokens, tokens)
        cached = record["cached_tokens"]
        billed = Usage(input_tokens=usage.prompt_tokens, output_tokens=tokens, cached_tokens=cached)
        assert record["credits"] == price(billed, PRICES).credits


async def test_constrained_and_free_sequences_batched_together_keep_their_guarantees(
    aclient: openai.AsyncOpenAI,
) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    ask = [{"role": "user", "content": "Invent a person: name and age."}]
    aclient = aclient.with_options(timeout=900)  # the first grammar builds the tokenizer (slow when busy)
    structured = aclient.chat.completions.create(
        model=MODEL,
        messages=ask,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    tool = aclient.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What's the weather in Oslo?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=60,
    )
    free = aclient.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello in French, then in German."}],
        max_tokens=20,
        stop=["German"],
    )
    person, call, text = await asyncio.gather(structured, tool, free)
    jsonschema.validate(json.loads(person.choices[0].message.content or ""), schema)
    calls = call.choices[0].message.tool_calls
    assert calls and call.choices[0].finish_reason == "tool_calls"
    for made in calls:
        assert made.function.name == "get_weather"  # type: ignore[union-attr]
        jsonschema.validate(json.loads(made.function.arguments), WEATHER_PARAMETERS)  # type: ignore[union-attr]
    answer = text.choices[0].message.content or ""
    assert answer.strip() and "German" not in answer and not text.choices[0].message.tool_calls


@dataclass(eq=False)
class Collected:
    """What a job's events said, read on the scheduler's thread."""

    texts: list[str] = field(default_factory=list)
    ends: list[ChoiceEnd] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def take(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, TextDelta):
                self.texts.append(event.text)
                if len(self.texts) >= 5:
                    self.started.set()
            elif isinstance(event, ChoiceEnd):
                self.ends.append(event)


class Direct(Job):
    """A backend job fed to the scheduler in-process (no event loop): events land in ``seen``."""

    def __init__(self, request: CoreRequest, tokens: list[int]) -> None:
        self.seen = Collected()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        super().__init__(request, tokens, None, Usage(), lambda choice: ChoicePlan(TextShaper(choice)))  # type: ignore[arg-type]

    def emit(self, events: list[Event]) -> None:
        self.seen.take(events)

    def end(self, error: BaseException | None = None) -> None:
        self.error = error
        self.finished.set()


def _direct_job(model: Model, text: str, max_tokens: int) -> Direct:
    template = ChatTemplate(model.metadata["tokenizer.chat_template"], "", model.token_text(model.token_eos()))
    request = CoreRequest(
        model="m",
        messages=(Message("user", (TextPart(text),)),),
        sampling=Sampling(max_tokens=max_tokens, temperature=0),
    )
    return Direct(request, model.tokenize(template.render(request)))


def _model(slots: int) -> Model:
    path = assemble("qwen2.5-coder-0.5b-instruct", Path.home() / ".cache" / "gatewright" / "models")
    return Model(str(path), n_ctx=2048, slots=slots, n_threads=2, n_batch=512)


class Recording(Scheduler):
    """Notes how many choices each generation batch held."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.batch_sizes: list[int] = []

    def _generate(self, slots: list[Any]) -> None:
        self.batch_sizes.append(len(slots))
        super()._generate(slots)


def _run_queued(scheduler: Recording, jobs: list[Direct]) -> None:
    """Queue every job before the engine starts, run them all to the end."""
    queue = FairQueue(8)
    for n, job in enumerate(jobs):
        queue.put(str(n), job)
    worker = threading.Thread(target=scheduler.run, args=(queue,), daemon=True)
    worker.start()
    try:
        for job in jobs:
            assert job.finished.wait(600) and job.error is None
    finally:
        queue.put("", None)
        worker.join(60)


def test_prompts_that_arrive_together_start_generating_together() -> None:
    model = _model(4)
    try:
        scheduler = Recording(Context(model), 4, 16, 512, 128)
        jobs = [_direct_job(model, f"Write one sentence about {topic}.", 6) for topic in TOPICS]
        _run_queued(scheduler, jobs)
        # All four prompts (~30 tokens each, 512 a step) are read in the first step: every choice
        # is in the first generation batch, and the batches hold all four until one ends.
        assert sum(len(job.tokens) for job in jobs) < 512
        assert scheduler.batch_sizes[0] == 4, scheduler.batch_sizes
        shortest = min(job.usage.output_tokens for job in jobs)
        assert scheduler.batch_sizes[: shortest - 1] == [4] * (shortest - 1), scheduler.batch_sizes
    finally:
        model.close()


def test_a_burst_larger_than_a_chunk_still_starts_together() -> None:
    model = _model(4)
    try:
        scheduler = Recording(Context(model), 4, 16, 48, 48)  # calls of 48 tokens at most
        jobs = [_direct_job(model, f"Write one sentence about {topic}.", 6) for topic in TOPICS]
        assert sum(len(job.tokens) for job in jobs) > scheduler.chunk  # a step of one chunk: a ramp
        assert max(len(job.tokens) for job in jobs) <= scheduler.busy_chunk
        _run_queued(scheduler, jobs)
        assert scheduler.batch_sizes[0] == 4, scheduler.batch_sizes
    finally:
        model.close()


def test_a_long_prompt_in_a_burst_does_not_hold_back_a_short_ones_second_token() -> None:
    model = _model(4)
    try:
        scheduler = Recording(Context(model), 4, 16, 48, 48)
        short = _direct_job(model, "Write one sentence about rivers.", 24)
        long = _direct_job(model, "Describe the copper mines of the valley. " * 40, 2)
        assert len(long.tokens) > 5 * scheduler.busy_chunk
        _run_queued(scheduler, [short, long])
        assert short.usage.output_tokens > len(long.tokens) // scheduler.busy_chunk + 1  # still running
        # The short prompt starts alone; the long one is read a share a step beside it.
        assert scheduler.batch_sizes[0] == 1, scheduler.batch_sizes
        assert 2 in scheduler.batch_sizes, scheduler.batch_sizes
    finally:
        model.close()


def test_a_cancelled_sequence_frees_its_slot_at_once() -> None:
    model = _model(1)
    scheduler = Scheduler(Context(model), 1, 16, 512, 128)
    queue = FairQueue(8)
    worker = threading.Thread(target=scheduler.run, args=(queue,), daemon=True)
    worker.start()

    def job(text: str, max_tokens: int) -> Direct:
        return _direct_job(model, text, max_tokens)

    try:
        # One slot: the second job can start only once the first has let go of it.
        long = job("Count from 1 to 3000, one number per line.", 1500)
        short = job("Say hi.", 4)
        queue.put("a", long)
        assert long.seen.started.wait(600)
        queue.put("b", short)
        long.cancelled = True  # what the backend's stream does when its caller leaves
        assert short.finished.wait(600) and short.error is None
        assert short.seen.ends and short.usage.output_tokens > 0
        assert long.usage.output_tokens < 1000  # it stopped when cancelled, not after ~1,500 tokens
        assert not long.seen.ends  # a caller that left gets no ending
        assert scheduler.busy == 0
    finally:
        queue.put("", None)
        worker.join(60)
        model.close()
