"""The embedded engine: llama-cpp-python running a GGUF in this process.

One worker thread owns each model (a ``Llama`` is single-threaded); requests wait in a fair queue
(round-robin across API keys, FIFO within a key) and stream their events back to the event loop.
A caller that goes away sets its job's ``cancelled`` flag; the worker stops at the next token.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from llama_cpp import Llama
from llguidance.llamacpp import lltokenizer_from_vocab

from gatewright.backends.cache_pins import Pin, cache_pins
from gatewright.backends.chat_template import CHATML, ChatTemplate
from gatewright.backends.constrain import GrammarConstraint, GrammarError, Guide, inline_json, unsupported_schema
from gatewright.backends.llamacpp_engine import ChoicePlan, Engine, StopScanner
from gatewright.backends.prefix_cache import PrefixCache
from gatewright.backends.registry import BackendEnv
from gatewright.backends.shaping import TextShaper, ToolCallShaper
from gatewright.backends.toolcalls import (
    CALL_SYNTAXES,
    DEFAULT_SYNTAX,
    arguments_schema,
    call_grammar,
    parameters_param,
)
from gatewright.backends.weights import resolve_model_path
from gatewright.core import tracing
from gatewright.core.backend import CallContext
from gatewright.core.catalog import CatalogError, Deployment, ModelEntry
from gatewright.core.errors import InternalError, Overloaded, UnsupportedFeature
from gatewright.core.events import Event, UsageReport
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
    pins: tuple[Pin, ...] = ()  # cache_control breakpoints: prompt prefixes to pin in the prefix cache
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    # perf_counter() when queued, taken by the engine, prefilled, finished: the trace's engine spans.
    queued_at: float = 0.0
    taken_at: float = 0.0
    prefilled_at: float = 0.0
    finished_at: float = 0.0

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

    def __len__(self) -> int:
        return self._size


class LlamaCppBackend:
    exact_prompt_count = True  # counts with the model's own tokenizer (core.routing.counts_exactly)

    def __init__(self, deployment: Deployment, entry: ModelEntry, env: BackendEnv) -> None:
        self.deployment = deployment
        self.entry = entry
        self.env = env
        options = deployment.options
        self.n_ctx = int(options.get("n_ctx", entry.context_window))
        self.n_threads = int(options.get("n_threads", os.cpu_count() or 2))
        self.n_batch = int(options.get("n_batch", 512))
        # Prompt reuse is in multiples of this many tokens (see llamacpp_engine on why).
        self.granularity = int(options.get("reuse_granularity", 16))
        # Snapshots of long prompt prefixes (a system prompt shared by interleaved conversations).
        self.prefix_cache_bytes = int(float(options.get("prefix_cache_mb", 256)) * 2**20)
        self.prefix_cache_min_tokens = int(options.get("prefix_cache_min_tokens", 256))
        self.queue = FairQueue(int(options.get("max_queue", 512)))
        self.template_override: str | None = options.get("chat_template")
        self.template_kwargs: dict[str, Any] = dict(options.get("template_kwargs", {}))
        syntax = options.get("tool_syntax", DEFAULT_SYNTAX)
        if syntax not in CALL_SYNTAXES:
            known = ", ".join(sorted(CALL_SYNTAXES))
            raise CatalogError(f"deployment {deployment.name}: unknown tool_syntax {syntax!r} (known: {known})")
        self.call_syntax = CALL_SYNTAXES[syntax]
        self.engine: Engine | None = None
        self.guide: Guide | None = None
        self.template: ChatTemplate | None = None
        self._thread: threading.Thread | None = None
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def loaded(self) -> bool:
        """The model is in memory and its worker runs (readiness, ``/health/ready``)."""
        return self.engine is not None

    def engine_stats(self) -> tuple[int, int]:
        """(requests waiting for the engine, sequences it is generating): read by /metrics."""
        queued = len(self.queue)
        return queued, max(self._in_flight - queued, 0)

    async def start(self) -> None:
        if self.engine is not None:
            return
        if not self.deployment.path:
            raise InternalError(f"deployment {self.deployment.name} needs a 'path' to a GGUF file")
        path = await asyncio.to_thread(resolve_model_path, self.deployment.path, self.env.model_cache)
        llm = await asyncio.to_thread(
            Llama,
            model_path=str(path),
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            n_batch=max(self.n_batch, self.granularity),
            verbose=False,
        )
        self.template = self._template_for(llm)
        cache = PrefixCache(self.prefix_cache_bytes, max(self.prefix_cache_min_tokens, self.granularity))
        self.engine = Engine(llm, self.granularity, cache)
        self.guide = Guide(lambda: lltokenizer_from_vocab(llm._model.vocab))
        self._thread = threading.Thread(target=self._work, name=f"llamacpp:{self.entry.id}", daemon=True)
        self._thread.start()

    def _template_for(self, llm: Llama) -> ChatTemplate:
        template = self.template_override or llm.metadata.get("tokenizer.chat_template") or CHATML
        bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
        return ChatTemplate(template, bos, eos, self.template_kwargs)

    async def close(self) -> None:
        if self._thread is not None:
            self.queue.put("", None)
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
        if self.engine is not None:
            self.engine.llm.close()
            self.engine = None

    def tokenize(self, request: CoreRequest) -> list[int]:
        if self.engine is None or self.template is None:
            raise InternalError(f"the model {self.entry.id} is not loaded")
        prompt = self.template.render(request)
        return self.engine.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

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
        if self.guide is None or self.engine is None:
            raise InternalError(f"the model {self.entry.id} is not loaded")
        guide, n_vocab = self.guide, self.engine.llm.n_vocab()
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
        pins = cache_pins(request, tokens, self.tokenize) if _marked(request) else ()
        job = Job(request, tokens, asyncio.get_running_loop(), ctx.usage, plans, pins, queued_at=time.perf_counter())
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

    def _work(self) -> None:
        while True:
            job = self.queue.take()
            if job is None:
                return
            if job.cancelled:
                continue
            try:
                self._serve(job)
            except Exception as error:  # reported to the caller, the worker lives on
                job.end(InternalError(f"local engine failed: {error!r}"))
            else:
                job.end()

    def _serve(self, job: Job) -> None:
        engine = self.engine
        assert engine is not None
        request = job.request
        job.taken_at = time.perf_counter()
        job.usage.input_tokens = len(job.tokens)
        base_seed = request.sampling.seed if request.sampling.seed is not None else random.getrandbits(32)
        for choice in range(request.n):
            reused = engine.prefill(job.tokens, job, job.pins)
            if choice == 0:
                job.usage.cached_tokens = reused
                job.prefilled_at = time.perf_counter()
            if job.cancelled:
                return
            engine.generate(job, request, choice, job.tokens, base_seed + choice, job.plans(choice))
            if job.cancelled:
                return
        job.finished_at = time.perf_counter()
        job.emit([UsageReport(job.usage)])


def _marked(request: CoreRequest) -> bool:
    return bool(request.cache_breakpoints) or any(t.cache is not None for t in request.tools)


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
