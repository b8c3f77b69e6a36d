"""The embedded engine: llama.cpp (through llama-cpp-python) running a GGUF in this process.

One worker thread owns each model and decodes up to ``parallel`` requests together
(``scheduler``); requests wait for a slot in a fair queue (round-robin across API keys, FIFO within
a key) and stream their events back to the event loop. A caller that goes away sets its job's
``cancelled`` flag; its slot is freed at the next step.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from gatewright.backends.cache_pins import Pin, cache_pins
from gatewright.backends.llamacpp._internals import Model, llguidance_tokenizer
from gatewright.backends.llamacpp.chat_template import CHATML, ChatTemplate
from gatewright.backends.llamacpp.constrain import (
    GrammarConstraint,
    GrammarError,
    Guide,
    inline_json,
    unsupported_schema,
)
from gatewright.backends.llamacpp.engine import ChoicePlan, Context, StopScanner
from gatewright.backends.llamacpp.prefix_cache import PrefixCache
from gatewright.backends.llamacpp.scheduler import Scheduler
from gatewright.backends.llamacpp.shaping import TextShaper, ToolCallShaper
from gatewright.backends.llamacpp.toolcalls import (
    CALL_SYNTAXES,
    DEFAULT_SYNTAX,
    arguments_schema,
    call_grammar,
    parameters_param,
)
from gatewright.backends.registry import BackendEnv
from gatewright.backends.weights import resolve_model_path
from gatewright.core import tracing
from gatewright.core.backend import CallContext
from gatewright.core.catalog import CatalogError, Deployment, ModelEntry
from gatewright.core.errors import InternalError, Overloaded, UnsupportedFeature
from gatewright.core.events import Event
from gatewright.core.types import CoreRequest, ResponseFormat, Usage

_END = object()
SCHEMA_PARAM = "response_format.json_schema.schema"


def answer_schema(fmt: ResponseFormat) -> dict[str, Any] | None:
    """The JSON Schema a response_format asks the answer to follow; None for free text."""
    if fmt.kind == "json_object":
        return {"type": "object"}
    return fmt.schema if fmt.kind == "json_schema" else None


def is_constrained(request: CoreRequest) -> bool:
    return (bool(request.tools) and request.tool_choice.mode != "none") or request.response_format.kind != "text"


@dataclass(eq=False)
class Job:
    request: CoreRequest
    tokens: list[int]
    loop: asyncio.AbstractEventLoop
    usage: Usage
    plans: Callable[[int], ChoicePlan]
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    # perf_counter() when queued, taken by the engine, prefilled, finished: the trace's engine spans.
    queued_at: float = 0.0
    taken_at: float = 0.0
    prefilled_at: float = 0.0
    finished_at: float = 0.0
    pins: tuple[Pin, ...] = ()  # cache_control breakpoints: prompt prefixes to pin (cache_pins)

    def emit(self, events: list[Event]) -> None:
        if events:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, events)

    def end(self, error: BaseException | None = None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, error if error is not None else _END)


class FairQueue:
    """Round-robin across owners, FIFO within one; bounded so overload is refused, not hidden."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queues: OrderedDict[str, deque[Job | None]] = OrderedDict()
        self._size = 0
        self._cond = threading.Condition()
        # The owner served last goes to the back only at the next take, so an owner that arrives
        # in between is served before it goes again.
        self._last: str | None = None

    def put(self, owner: str, job: Job | None) -> None:
        with self._cond:
            if job is not None and self._size >= self.limit:
                raise Overloaded(
                    f"The local engine has {self._size} requests waiting; try again shortly.",
                    code="engine_queue_full",
                )
            self._queues.setdefault(owner, deque()).append(job)
            self._size += 1
            self._cond.notify()

    def take(self) -> Job | None:
        with self._cond:
            while self._size == 0:
                self._cond.wait()
            if self._last is not None and self._last in self._queues:
                self._queues.move_to_end(self._last)
            owner, queue = next(iter(self._queues.items()))
            job = queue.popleft()
            if not queue:
                del self._queues[owner]
            self._last = owner
            self._size -= 1
            return job

    def poll(self) -> tuple[bool, Job | None]:
        """``take`` without waiting: (False, None) when nothing is queued."""
        with self._cond:
            if self._size == 0:
                return False, None
        return True, self.take()

    def __len__(self) -> int:
        return self._size


def _default_parallel() -> int:
    """Sequences decoded together: on a few cores, 2 per core (decoding is memory-bound, so a batch
    of several costs little more than one); at most 8."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


class PreparedPrompts:
    """Each request's prompt is rendered and tokenized once: the pipeline counts its tokens, then
    streams a copy of the same request (same ``messages`` and ``tools`` objects), which finds its
    tokens here. Entries hold their request's parts, so an id is not reused while remembered."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: OrderedDict[int, tuple[tuple[object, ...], list[int]]] = OrderedDict()

    def get(self, request: CoreRequest, build: Callable[[CoreRequest], list[int]]) -> list[int]:
        parts = (request.messages, request.tools, request.tool_choice, request.reasoning)
        key = id(request.messages)
        hit = self._entries.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], parts, strict=True)):
            self._entries.move_to_end(key)
            return hit[1]
        tokens = build(request)
        self._entries[key] = (parts, tokens)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return tokens


class LlamaCppBackend:
    exact_prompt_count = True  # counts with the model's own tokenizer (core.routing.counts_exactly)

    def __init__(self, deployment: Deployment, entry: ModelEntry, env: BackendEnv) -> None:
        self.deployment = deployment
        self.entry = entry
        self.env = env
        options = deployment.options
        self.n_ctx = int(options.get("n_ctx", entry.context_window))  # per sequence
        self.n_threads = int(options.get("n_threads", os.cpu_count() or 2))
        self.n_batch = int(options.get("n_batch", 512))
        # Sequences decoded together (continuous batching); each has its own n_ctx of KV cells.
        self.parallel = int(options.get("parallel", _default_parallel()))
        # Prompt chunk while other requests are generating: their next token waits for it.
        self.busy_chunk = int(options.get("prefill_chunk_busy", 256))
        # Prompt tokens read before generating when nothing else is: a burst starts together.
        self.idle_budget = int(options.get("prefill_budget_idle", 2048))
        # Prompt reuse is in multiples of this many tokens (see scheduler on why).
        self.granularity = int(options.get("reuse_granularity", 16))
        # Snapshots of long prompt prefixes (a system prompt shared by interleaved conversations).
        self.prefix_cache_bytes = int(float(options.get("prefix_cache_mb", 256)) * 2**20)
        self.prefix_cache_min_tokens = int(options.get("prefix_cache_min_tokens", 256))
        # Of which cache_control pins may hold at most this much (half unless told; 0: no pins).
        pin_mb = options.get("prefix_cache_pin_mb")
        self.prefix_cache_pin_bytes = None if pin_mb is None else int(float(pin_mb) * 2**20)
        self.queue = FairQueue(int(options.get("max_queue", 512)))
        self.template_override: str | None = options.get("chat_template")
        self.template_kwargs: dict[str, Any] = dict(options.get("template_kwargs", {}))
        syntax = options.get("tool_syntax", DEFAULT_SYNTAX)
        if syntax not in CALL_SYNTAXES:
            known = ", ".join(sorted(CALL_SYNTAXES))
            raise CatalogError(f"deployment {deployment.name}: unknown tool_syntax {syntax!r} (known: {known})")
        if self.parallel < 1:
            raise CatalogError(f"deployment {deployment.name}: parallel must be at least 1")
        self.call_syntax = CALL_SYNTAXES[syntax]
        self.model: Model | None = None
        self.scheduler: Scheduler | None = None
        self.guide: Guide | None = None
        self.template: ChatTemplate | None = None
        self.prompts = PreparedPrompts()
        self._thread: threading.Thread | None = None
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def loaded(self) -> bool:
        """The model is in memory and its worker runs (readiness, ``/health/ready``)."""
        return self.model is not None

    def engine_stats(self) -> tuple[int, int]:
        """(requests waiting for a slot, sequences it is generating): read by /metrics."""
        return len(self.queue), self.scheduler.busy if self.scheduler is not None else 0

    async def start(self) -> None:
        if self.model is not None:
            return
        if not self.deployment.path:
            raise InternalError(f"deployment {self.deployment.name} needs a 'path' to a GGUF file")
        path = await asyncio.to_thread(resolve_model_path, self.deployment.path, self.env.model_cache)
        model = await asyncio.to_thread(
            Model, str(path), self.n_ctx, self.parallel, self.n_threads, max(self.n_batch, 2 * self.granularity)
        )
        self.template = self._template_for(model)
        cache = PrefixCache(
            self.prefix_cache_bytes, max(self.prefix_cache_min_tokens, self.granularity), self.prefix_cache_pin_bytes
        )
        scheduler = Scheduler(
            Context(model), self.parallel, self.granularity, self.n_batch, self.busy_chunk, cache, self.idle_budget
        )
        self.model, self.scheduler = model, scheduler
        self.guide = Guide(lambda: llguidance_tokenizer(model))
        self._thread = threading.Thread(
            target=scheduler.run, args=(self.queue,), name=f"llamacpp:{self.entry.id}", daemon=True
        )
        self._thread.start()

    def _template_for(self, model: Model) -> ChatTemplate:
        template = self.template_override or model.metadata.get("tokenizer.chat_template") or CHATML
        bos, eos = model.token_text(model.token_bos()), model.token_text(model.token_eos())
        return ChatTemplate(template, bos, eos, self.template_kwargs)

    async def close(self) -> None:
        if self._thread is not None:
            self.queue.put("", None)
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
        if self.model is not None:
            self.model.close()
            self.model = self.scheduler = None

    def tokenize(self, request: CoreRequest) -> list[int]:
        return self.prompts.get(request, self._tokenize)

    def _tokenize(self, request: CoreRequest) -> list[int]:
        if self.model is None or self.template is None:
            raise InternalError(f"the model {self.entry.id} is not loaded")
        return self.model.tokenize(self.template.render(request))

    async def count_prompt_tokens(self, request: CoreRequest) -> int:
        return len(self.tokenize(request))

    def plans_for(self, request: CoreRequest) -> Callable[[int], ChoicePlan]:
        """How each choice is read and constrained. Compiles a grammar when the request has tools or
        a JSON response_format (seconds the first time: run it off the event loop); a schema the
        engine cannot enforce is a 400 naming the parameter."""
        answer = answer_schema(request.response_format)
        tools = bool(request.tools) and request.tool_choice.mode != "none"
        if not tools and answer is None:
            return lambda choice: ChoicePlan(TextShaper(choice))
        if self.guide is None or self.model is None:
            raise InternalError(f"the model {self.entry.id} is not loaded")
        guide, n_vocab = self.guide, self.model.n_vocab
        if not tools:
            assert answer is not None
            try:
                matcher = guide.compile("start: " + inline_json(answer))
            except GrammarError as error:
                raise unsupported_schema(str(error), SCHEMA_PARAM) from None
            return lambda choice: ChoicePlan(TextShaper(choice), GrammarConstraint(matcher.deep_copy(), n_vocab), ())
        syntax = self.call_syntax
        grammar = call_grammar(request, syntax, guide.is_special(syntax.open_tag), answer)
        try:
            matcher = guide.compile(grammar.lark)
        except GrammarError as error:
            raise self._culprit(request, answer, str(error)) from None
        answer_stops = request.sampling.stop if answer is None else ()
        return lambda choice: ChoicePlan(
            ToolCallShaper(choice, grammar.openers, grammar.answer_allowed, StopScanner(answer_stops)),
            GrammarConstraint(matcher.deep_copy(), n_vocab),
            (),
        )

    def _culprit(self, request: CoreRequest, answer: dict[str, Any] | None, reason: str) -> UnsupportedFeature:
        """The schema a refused grammar came from, as a 400 with its parameter."""
        assert self.guide is not None
        try:
            if answer is not None:
                self.guide.check_schema(answer, SCHEMA_PARAM)
            for i, tool in enumerate(request.tools):
                self.guide.check_schema(arguments_schema(tool, i), parameters_param(i))
        except UnsupportedFeature as error:
            return error
        return unsupported_schema(reason, "tools")

    async def stream(self, request: CoreRequest, ctx: CallContext) -> AsyncIterator[Event]:
        plans = await asyncio.to_thread(self.plans_for, request) if is_constrained(request) else self.plans_for(request)
        tokens = self.tokenize(request)
        job = Job(request, tokens, asyncio.get_running_loop(), ctx.usage, plans, queued_at=time.perf_counter())
        if _marked(request):  # each breakpoint renders and tokenizes the prompt cut there: off the loop
            job.pins = await asyncio.to_thread(cache_pins, request, tokens, self._tokenize)
        self.queue.put(ctx.owner, job)
        self._in_flight += 1
        try:
            while True:
                item = await job.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                for event in item:
                    yield event
        finally:
            job.cancelled = True
            self._in_flight -= 1
            if tracing.ENABLED:
                _trace_phases(job)


def _marked(request: CoreRequest) -> bool:
    return bool(request.cache_breakpoints) or any(tool.cache is not None for tool in request.tools)


def _trace_phases(job: Job) -> None:
    """The engine's part of the request as spans: waiting in the queue, prefill, decode (a phase
    the request was cut in ends when it was cut)."""
    now = time.perf_counter()
    taken = job.taken_at or now
    tracing.record_span("gatewright.engine.queue_wait", job.queued_at, taken, {})
    if job.taken_at:
        prefilled = job.prefilled_at or now
        prompt = {
            "gen_ai.usage.input_tokens": len(job.tokens),
            "gatewright.usage.cached_tokens": job.usage.cached_tokens,
        }
        tracing.record_span("gatewright.engine.prefill", taken, prefilled, prompt)
        if job.prefilled_at:
            decoded = {"gen_ai.usage.output_tokens": job.usage.output_tokens}
            tracing.record_span("gatewright.engine.decode", prefilled, job.finished_at or now, decoded)
