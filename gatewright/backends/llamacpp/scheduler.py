"""Continuous batching: up to ``slots`` choices decode together, one llama.cpp batch per step.

Each slot is a sequence id with its own KV stream. A step reads prompt chunks (the prompt with the
fewest tokens left to read first: ``next_to_read``), up to a token budget, and then evaluates one
batch holding the next token of every choice that is generating, whose logits rows each choice
samples on its own. A request joins at the next step (or between two prompt calls of a step); its
prompt goes in chunks (a smaller budget while others are generating, so their streams keep
moving); a choice that ends or whose caller left frees its slot at once. Fairness across keys
comes from the queue: a free slot goes to the job the fair queue hands out next.

Prompt reuse stays deterministic. llama.cpp's quantized matrix products work on a batch's rows in
groups (4 on x86 with repacked Q4_K weights) and on the rows left over with another kernel, whose
rounding differs; and its attention products take another kernel for a call of one row than for
two or more (``llamafile_sgemm`` is for prompts). So a token's hidden state depends on where the
chunk it was evaluated in began and on how many rows the call had. Measured on x86 (AVX2): chunks
that start at multiples of 8 and have 8 rows or more give bit-identical rows, in calls of any
larger size; calls of 2-7 rows take small-batch kernels and differ (reuse at granularity 4, whose
chunks can be 4 rows, changed the logits in 16 of 60 random cases; at 8 and 16 in none). A prompt
is therefore reused only up to a multiple of ``granularity`` (16) short of its last two tokens,
evaluated from there in chunks whose sizes are multiples of it, the last call taking all the rest
(two tokens at least, the last one included), always in a batch of its own; so the KV cells of a
prompt and the logits of its last token are the same bits whether computed fresh, kept in a slot,
copied from another slot or restored from a snapshot, in whatever chunk size, and whatever else
was running. When the rest past that reuse boundary is 2-7 tokens, the last call starts at the
boundary whether the prompt is read fresh or reused (read whole in one call, a fresh prompt's
seeded text changed once its prefix was reused: a repeated request then reads its tail in a
smaller call); when it is ``WHOLE_TAIL`` (8) or more, the rest of the prompt goes in one call if it
fits in the chunk, its rows the same bits as a reused prompt's last call from the boundary. So a
prompt that fits in a chunk costs one call (two when its tail is short), and a cached prefix one
call for its new tokens. The generated tokens go in the shared generation batch: alone there (one
request at a time) a seed gives the same text every time; next to other choices the logits can
differ in their lowest bits (the rows are grouped differently), so a seeded request that ran
batched may pick another token where two were nearly tied.

Busy slots are kept on consecutive sequence ids from 0 (``_compact``): with one KV stream per
sequence, llama.cpp evaluates a batch's sequences in one pass only while their ids run
consecutively, and every extra pass re-reads all the weights.

A request's ``cache_control`` breakpoints (``cache_pins``) are pinned in the prefix cache: its
prefill stops at each pinned position (aligned down to the granularity, short of the last two
tokens) to snapshot the slot there, and a pinned prefix the cache does not hold yet is evaluated
again from its end rather than taken from a slot (whose cells run past it and cannot be cut into a
snapshot).
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gatewright.backends.cache_pins import Pin
from gatewright.backends.llamacpp._internals import Batch, Model
from gatewright.backends.llamacpp.engine import Choice, ChoicePlan, Context
from gatewright.backends.llamacpp.prefix_cache import PrefixCache, common_prefix
from gatewright.core.errors import InternalError
from gatewright.core.events import Event, UsageReport
from gatewright.core.types import CoreRequest, Usage

# Rows past the reuse boundary from which the rest of a prompt is read in one call rather than as a
# chunk and a last call of its own: a call of 8 rows or more computes each row as a larger call does
# (measured on x86 with AVX2, one and two threads: the last logits, and the cells as a longer prompt
# reuses them, the same bits in 150 random prompts, ``bench.prefill_calls --exact``; with 2-7 rows
# past the boundary they differed, as they do in llama.cpp's small-batch kernels). One call fewer
# saves its fixed cost, ~50-110 ms on one thread (``bench.prefill_calls``).
WHOLE_TAIL = 8


class Work(Protocol):
    """A request as the engine sees it (``backend.Job``)."""

    request: CoreRequest
    tokens: list[int]
    usage: Usage
    cancelled: bool
    plans: Callable[[int], ChoicePlan]
    pins: tuple[Pin, ...]  # cache_control breakpoints: prompt prefixes to pin in the prefix cache
    # perf_counter() when the engine took it, had read its prompt, was done (the trace's spans).
    taken_at: float
    prefilled_at: float
    finished_at: float

    def emit(self, events: list[Event]) -> None: ...

    def end(self, error: BaseException | None = None) -> None: ...


class Source(Protocol):
    """Where jobs come from (``backend.FairQueue``): None asks the engine to stop."""

    def take(self) -> Work | None: ...

    def poll(self) -> tuple[bool, Work | None]: ...


@dataclass(eq=False)
class Run:
    """One admitted job: its choices still to start or running, and the seed they derive from."""

    job: Work
    seed: int
    remaining: int
    prefilled: bool = False  # choice 0's prompt is in its slot (later choices copy it from there)
    failed: bool = False


@dataclass(eq=False)
class Slot:
    seq: int
    cells: list[int] = field(default_factory=list)  # the tokens whose KV cells the slot holds
    run: Run | None = None
    choice: Choice | None = None
    prompt: list[int] = field(default_factory=list)
    pins: dict[int, float] = field(default_factory=dict)  # aligned prefix length to pin → its TTL
    next_token: int | None = None  # to evaluate in the next generation batch
    admitted: int = 0
    passed_over: int = 0  # steps in which another prompt was read before this one's (``next_to_read``)
    used: int = 0  # when it last served (least recently used slots are reused first)

    @property
    def prefilling(self) -> bool:
        return self.choice is not None and self.next_token is None


class Scheduler:
    """Runs on the backend's worker thread; owns the model's context."""

    def __init__(
        self,
        ctx: Context,
        slots: int,
        granularity: int,
        chunk: int,
        busy_chunk: int,
        cache: PrefixCache | None = None,
        idle_budget: int = 2048,
    ) -> None:
        self.ctx = ctx
        self.model: Model = ctx.model
        self.granularity = granularity
        self.chunk = max(2 * granularity, chunk // granularity * granularity)
        self.busy_chunk = max(2 * granularity, min(busy_chunk, self.chunk) // granularity * granularity)
        # Prompt tokens a step reads before its generation batch when nothing was generating
        # (several chunks: every prompt of a burst starts together, as in llama-server's and
        # vLLM's default of 2,048 batched tokens); ``busy_chunk`` while something is.
        self.idle_budget = max(self.chunk, idle_budget)
        self.cache = cache
        self.slots = [Slot(i) for i in range(slots)]
        self.batch = Batch(max(self.chunk, slots))
        self._pending: deque[tuple[Run, int]] = deque()  # choices after the first, waiting for a slot
        self._stopping = False  # the source handed out None during a step
        self._clock = itertools.count(1)

    @property
    def busy(self) -> int:
        return sum(slot.choice is not None for slot in self.slots)

    def run(self, source: Source) -> None:
        """Serve until the source hands out None."""
        try:
            while self._admit(source):
                self._step(source)
        finally:
            for slot in self.slots:
                if slot.run is not None:
                    self._fail(slot.run, InternalError("the local engine stopped"))
            self.batch.close()

    # -- admission -------------------------------------------------------------------------------

    def _admit(self, source: Source) -> bool:
        """Fill free slots; waits for work only when nothing is running. False: stop."""
        if self._stopping:
            return False
        while any(slot.choice is None for slot in self.slots):
            if self._pending and self._start_pending():
                continue
            if self.busy:
                got, job = source.poll()
                if not got:
                    return True
            else:
                job = source.take()
            if job is None:
                self._stopping = True
                return False
            if job.cancelled:
                continue
            job.taken_at = time.perf_counter()
            job.usage.input_tokens = len(job.tokens)
            seed = job.request.sampling.seed
            run = Run(job, seed if seed is not None else random.getrandbits(32), job.request.n)
            self._start(run, 0)
            self._pending.extend((run, choice) for choice in range(1, job.request.n))
        return True

    def _start_pending(self) -> bool:
        """Start the next waiting choice once its first choice's prompt is in place."""
        run, choice = self._pending[0]
        if run.failed or run.job.cancelled:
            self._pending.popleft()
            return True
        if not run.prefilled:
            return False
        self._pending.popleft()
        self._start(run, choice)
        return True

    def _start(self, run: Run, choice: int) -> None:
        job = run.job
        try:
            plan = job.plans(choice)
            pins = self._aligned_pins(job.tokens, job.pins) if choice == 0 else {}
            slot, reused = self._place(job.tokens, pins)
            slot.choice = Choice(job, job.request, choice, len(job.tokens), run.seed + choice, plan, self.ctx)
        except Exception as error:
            self._fail(run, InternalError(f"local engine failed: {error!r}"))
            return
        if choice == 0:
            job.usage.cached_tokens = reused
        slot.run = run
        slot.prompt = job.tokens
        slot.pins = pins
        slot.next_token = None
        slot.admitted = next(self._clock)
        slot.passed_over = 0
        try:
            for at in sorted(at for at in pins if at <= reused):
                self._pin(slot, at)  # held already (pinned again for its TTL), or exactly the slot's cells
        except Exception as error:  # as a snapshot failing in prefill: not the worker's end
            self._fail(run, InternalError(f"local engine failed: {error!r}"))

    def _aligned_pins(self, tokens: Sequence[int], pins: Sequence[Pin]) -> dict[int, float]:
        """Where the prompt's pinned prefixes end, aligned down (the cells a snapshot can hold)."""
        if self.cache is None:
            return {}
        step = self.granularity
        boundary = (len(tokens) - 2) // step * step  # as far as a prompt is reused (see ``_place``)
        aligned: dict[int, float] = {}
        for pin in pins:
            at = min(pin.tokens // step * step, boundary)
            if at > 0 and self.cache.can_pin(at):
                aligned[at] = max(aligned.get(at, 0.0), pin.ttl)
        return aligned

    def _pin(self, slot: Slot, at: int) -> None:
        """Pin the prompt's first ``at`` tokens: kept by the cache already, or the slot's cells now."""
        assert self.cache is not None and slot.run is not None
        usage = slot.run.job.usage
        held = len(slot.cells) != at  # past the pin: the cache holds it (see ``_place``)
        data = (lambda: b"") if held else (lambda: self.model.save(slot.seq))
        if self.cache.pin(slot.prompt[:at], slot.pins[at], data):
            usage.cache_write_tokens = max(usage.cache_write_tokens, at - usage.cached_tokens)

    def _place(self, tokens: Sequence[int], pins: Collection[int] = ()) -> tuple[Slot, int]:
        """The lowest free slot (see ``_compact``), holding the longest aligned prefix of the prompt:
        its own cells, those of a free slot it trades places with, or cells copied from another slot
        or restored from a snapshot when they share more; cut back to a pinned prefix the cache does
        not hold yet, so that prefill can snapshot it."""
        step, model = self.granularity, self.model
        head = tokens[: len(tokens) - 2]  # the last call reads 2 rows or more (see the module doc)
        free = [slot for slot in self.slots if slot.choice is None]
        slot = max(free, key=lambda s: (common_prefix(s.cells, head) // step, -s.seq))
        if slot is not free[0]:
            self._swap(slot, free[0])  # the cells move with it: busy slots stay packed at the low ids
        shared = common_prefix(slot.cells, head)
        donor = max((s for s in self.slots if s is not slot), key=lambda s: common_prefix(s.cells, head), default=None)
        donated = common_prefix(donor.cells, head) if donor is not None else 0
        snapshot, restorable = self.cache.best(head) if self.cache is not None else (None, 0)
        if donor is not None and donated // step > max(shared, restorable) // step:
            if model.load(slot.seq, model.save(donor.seq)):
                slot.cells, shared = list(donor.cells), donated
            else:
                slot.cells, shared = [], 0
        elif snapshot is not None and restorable // step > shared // step:
            assert self.cache is not None
            self.cache.used(snapshot)
            if model.load(slot.seq, snapshot.data):
                slot.cells, shared = [int(t) for t in snapshot.tokens], restorable
            else:
                slot.cells, shared = [], 0
        reuse = shared // step * step
        if self.cache is not None:
            unheld = [at for at in pins if at < reuse and not self.cache.holds(tokens[:at])]
            reuse = min([reuse, *unheld])
        model.forget(slot.seq, reuse)
        del slot.cells[reuse:]
        slot.used = next(self._clock)
        return slot, reuse

    def _swap(self, a: Slot, b: Slot) -> None:
        """Trade the sequence ids of two slots, moving their KV cells along (a copy: the cells keep
        their bits)."""
        model = self.model
        data_a = model.save(a.seq) if a.cells else b""
        data_b = model.save(b.seq) if b.cells else b""
        a.seq, b.seq = b.seq, a.seq
        self.slots.sort(key=lambda s: s.seq)
        for slot, data in ((a, data_a), (b, data_b)):
            if data and model.load(slot.seq, data):
                continue
            model.forget(slot.seq)
            if slot.choice is not None and slot.cells:  # a running choice cannot go on without them
                self._fail_slots([slot], RuntimeError("moving the KV cells to another sequence failed"))
            slot.cells.clear()

    def _compact(self) -> None:
        """Keep busy slots on consecutive sequence ids from 0. With a KV stream per sequence,
        llama.cpp computes a batch's sequences in one pass only while their ids run consecutively
        (``split_equal``); a gap costs a whole extra pass over the weights per step. A slot that
        ended below a busy one therefore trades places with the highest busy slot."""
        while True:
            hole = next((slot for slot in self.slots if slot.choice is None), None)
            last = next((slot for slot in reversed(self.slots) if slot.choice is not None), None)
            if hole is None or last is None or hole.seq > last.seq:
                return
            self._swap(hole, last)

    # -- one step ----------------------------------------------------------------------------------

    def _step(self, source: Source) -> None:
        for slot in self.slots:
            if slot.run is not None and slot.run.job.cancelled:
                self._release(slot)
        self._compact()
        generating = [slot for slot in self.slots if slot.next_token is not None]
        if not generating:
            self._read_prompts(source, self.idle_budget, idle=True)
            return
        self._read_prompts(source, self.busy_chunk)
        try:
            self._generate(generating)
        except Exception as error:
            self._fail_slots(generating, error)

    def _read_prompts(self, source: Source, budget: int, idle: bool = False) -> None:
        """Read waiting prompts, a call at a time, until ``budget`` tokens are read this step. Prompts
        that arrive together are all read before the step's generation batch, so their choices
        start generating together and their batches stay full, where reading one prompt per step
        started them one by one and the batches ramped up and down through the sizes that cost
        the most per row (one thread here: 1 row 20 ms, 3 rows 95 ms, 8 rows 145 ms). Each call
        stays a batch of its own (the module doc: a prompt's cells do not depend on what else is
        read). Requests that arrived during a call are admitted before the next one, so they are
        read in this step too.

        ``idle``: nothing was generating when the step began, and its budget spans several chunks
        so that a burst of prompts starts together. Once one of them has its first token, a prompt
        with more than ``busy_chunk`` tokens left waits for the next step, as it would beside any
        running stream: a long prompt does not hold back a short one's second token."""
        read = 0
        while read < budget:
            if read and self.busy and not self._admit(source):  # polls: something is running
                return
            prefilling = [slot for slot in self.slots if slot.prefilling]
            if idle and any(slot.next_token is not None for slot in self.slots):
                prefilling = [slot for slot in prefilling if len(slot.prompt) - len(slot.cells) <= self.busy_chunk]
            if not prefilling:
                return
            slot = next_to_read(prefilling, len(self.slots))
            before = len(slot.cells)
            chunk = min(self.chunk, max(self.granularity, (budget - read) // self.granularity * self.granularity))
            try:
                row = self._prefill(slot, chunk)
            except Exception as error:
                self._fail_slots([slot], error)
                continue
            read += max(len(slot.cells) - before, 1)
            if row is not None:
                self._advance(slot, row)

    def _prefill(self, slot: Slot, chunk: int) -> int | None:
        """One more piece of the prompt: an aligned chunk up to the reuse boundary, then the rest in
        one call, whose last row (the last token's logits) it returns for the choice to draw its
        first token from. The last call always has at least two rows (see ``_place``); when the
        rows past the boundary are at least ``WHOLE_TAIL``, the rest of the prompt goes in one call
        if it fits in the chunk."""
        prompt, step = slot.prompt, self.granularity
        position = len(slot.cells)  # a multiple of the granularity until the last call
        # The last call starts where any later request sharing this prompt would start reading
        # (``_place``: aligned, two tokens short of the end), so the cells it writes are the same
        # bits whether the prompt was read fresh or reused: the last call's rows depend on its size
        # below ``WHOLE_TAIL`` rows (llama.cpp's small-batch kernels), not above it.
        boundary = (len(prompt) - 2) // step * step
        stops = [at for at in slot.pins if at > position]  # pins end short of the last two tokens
        whole = len(prompt) - boundary >= WHOLE_TAIL and len(prompt) - position <= chunk and not stops
        if position < boundary and not whole:
            end = min([position + chunk, boundary, *stops])
            self._evaluate(slot, prompt[position:end], False)
            if end in slot.pins:
                self._pin(slot, end)  # the slot holds exactly this prefix now
            return None
        row = self._evaluate(slot, prompt[position:], True)
        cache = self.cache
        if cache is not None and cache.wants(prompt):
            cache.save(prompt, self.model.save(slot.seq))  # the slot holds exactly the prompt
        if slot.run is not None and not slot.run.prefilled:
            slot.run.prefilled = True
            slot.run.job.prefilled_at = time.perf_counter()
        return row

    def _evaluate(self, slot: Slot, tokens: Sequence[int], logits: bool) -> int:
        batch = self.batch
        batch.clear()
        row = batch.add(tokens, len(slot.cells), slot.seq, logits)
        self.model.decode(batch)
        slot.cells.extend(tokens)
        return row

    def _generate(self, slots: list[Slot]) -> None:
        """The next token of every generating choice, in one batch (in sequence id order: see
        ``_compact``)."""
        batch = self.batch
        batch.clear()
        rows = []
        for slot in slots:
            assert slot.next_token is not None
            rows.append(batch.add((slot.next_token,), len(slot.cells), slot.seq, True))
        self.model.decode(batch)
        for slot, row in zip(slots, rows, strict=True):
            assert slot.next_token is not None
            slot.cells.append(slot.next_token)
            slot.next_token = None
            self._advance(slot, row)

    def _advance(self, slot: Slot, row: int) -> None:
        """The choice draws its next token from ``row`` and takes it; it ends or goes on."""
        assert slot.choice is not None
        try:
            token = slot.choice.sample(row)
            ended = slot.choice.take(token)
        except Exception as error:
            self._fail_slots([slot], error)
            return
        if ended:
            self._release(slot)
        else:
            slot.next_token = token

    # -- endings -----------------------------------------------------------------------------------

    def _release(self, slot: Slot) -> None:
        """Free the slot (its cells stay for prefix reuse); the job ends with its last choice."""
        run, choice = slot.run, slot.choice
        slot.run = slot.choice = None
        slot.next_token = None
        if choice is not None:
            choice.close()
        if run is None:
            return
        run.remaining -= 1
        if run.remaining == 0 and not run.failed:
            run.job.finished_at = time.perf_counter()
            if not run.job.cancelled:
                run.job.emit([UsageReport(run.job.usage)])
            run.job.end()

    def _fail_slots(self, slots: list[Slot], error: BaseException) -> None:
        for slot in slots:
            self.model.forget(slot.seq)  # its cells may be half written
            slot.cells.clear()
            if slot.run is not None:
                self._fail(slot.run, InternalError(f"local engine failed: {error!r}"))

    def _fail(self, run: Run, error: BaseException) -> None:
        """End a job with an error and free every slot it holds."""
        if not run.failed:
            run.failed = True
            run.job.end(error)
        for slot in self.slots:
            if slot.run is run:
                slot.run = None
                if slot.choice is not None:
                    slot.choice.close()
                slot.choice = None
                slot.next_token = None


def next_to_read(prefilling: Sequence[Slot], patience: int) -> Slot:
    """Whose prompt the next chunk is read from: the one with the fewest tokens left to read, so a
    short prompt that arrived beside a long one gets its first token after its own few chunks, not
    after the long one's (the oldest first, when several have as many left). A prompt passed over
    ``patience`` times is read next whatever its length, so a long prompt still advances while
    shorter ones keep arriving: at least one chunk in every ``patience + 1`` calls."""
    waited = max(prefilling, key=lambda s: (s.passed_over, -s.admitted))
    if waited.passed_over >= patience:
        chosen = waited
    else:
        chosen = min(prefilling, key=lambda s: (len(s.prompt) - len(s.cells), s.admitted))
    for slot in prefilling:
        slot.passed_over = 0 if slot is chosen else slot.passed_over + 1
    return chosen
