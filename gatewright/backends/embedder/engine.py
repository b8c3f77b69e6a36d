"""Worker threads that run embedding batches on llama.cpp, and the fair queue that feeds them.

A request's inputs are not run as one batch: each worker takes the next batch of about
``batch_tokens`` tokens, filled one input at a time round-robin across the callers (API keys)
that are waiting, so a single sentence is never stuck behind another caller's thousand. Small
batches are also what llama.cpp runs fastest: it attends over every token in a batch (masked per
sequence), so its cost grows with the square of the batch; measured here, ~64-token batches
reached the reference's per-core throughput and 2,048-token ones a seventh of it. So each worker
runs single-threaded on its own context, and several workers (one per core by default) run
batches side by side; they share the mmapped weights.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import llama_cpp
import numpy as np
from llama_cpp import Llama

from gatewright.core.errors import InternalError, Overloaded

if TYPE_CHECKING:
    import numpy.typing as npt


@dataclass(eq=False)
class EmbedJob:
    """One request's inputs (token ids, already cut to the model's limit) and its result rows."""

    ids: Sequence[Sequence[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[npt.NDArray[np.float32]]
    out: npt.NDArray[np.float32]
    next: int = 0  # the next input to hand to a worker
    left: int = 0  # inputs not yet embedded
    cancelled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.left = len(self.ids)

    def done(self, index: int, vector: npt.NDArray[np.float32]) -> None:
        self.out[index] = vector
        with self._lock:
            self.left -= 1
            finished = self.left == 0
        if finished:
            self.loop.call_soon_threadsafe(_resolve, self.future, self.out)

    def fail(self, error: BaseException) -> None:
        self.cancelled = True
        self.loop.call_soon_threadsafe(_reject, self.future, error)


def _resolve(future: asyncio.Future[npt.NDArray[np.float32]], value: npt.NDArray[np.float32]) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[npt.NDArray[np.float32]], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


Piece = tuple[EmbedJob, int]  # (job, index of one of its inputs)


class BatchQueue:
    """Jobs by owner; batches are filled one input at a time, round-robin across owners (FIFO
    within one). Bounded in waiting inputs, so overload is a clear 503, not a growing delay."""

    def __init__(self, max_inputs: int) -> None:
        self.max_inputs = max_inputs
        self._owners: OrderedDict[str, deque[EmbedJob]] = OrderedDict()
        self._waiting = 0  # inputs not yet handed out
        self._closed = False
        self._cond = threading.Condition()
        # The owner served last goes to the back only at the next pick, so an owner that arrives
        # in between is served before it goes again.
        self._last: str | None = None

    def put(self, owner: str, job: EmbedJob) -> None:
        with self._cond:
            if self._waiting and self._waiting + len(job.ids) > self.max_inputs:
                raise Overloaded(
                    f"The embedding engine has {self._waiting} inputs waiting; try again shortly.",
                    code="engine_queue_full",
                )
            self._owners.setdefault(owner, deque()).append(job)
            self._waiting += len(job.ids)
            self._cond.notify_all()

    def close(self) -> list[EmbedJob]:
        """Stop handing out work; returns the jobs still waiting, for the caller to fail."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            waiting = [job for jobs in self._owners.values() for job in jobs]
            self._owners.clear()
            self._waiting = 0
            return waiting

    def take(self, budget: int, capacity: int) -> list[Piece] | None:
        """Inputs for one batch: about ``budget`` tokens, never more than ``capacity``; ``None``
        once closed. Blocks while nothing waits."""
        with self._cond:
            while not self._owners and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            batch: list[Piece] = []
            used = 0
            while self._owners and used < budget:
                if self._last is not None and self._last in self._owners:
                    self._owners.move_to_end(self._last)
                self._last = None
                owner, jobs = next(iter(self._owners.items()))
                job = jobs[0]
                if job.cancelled:
                    self._waiting -= len(job.ids) - job.next
                    self._pop(owner, jobs)
                    continue
                size = len(job.ids[job.next])
                if batch and used + size > capacity:
                    break
                batch.append((job, job.next))
                self._last = owner
                used += size
                job.next += 1
                self._waiting -= 1
                if job.next == len(job.ids):
                    self._pop(owner, jobs)
            return batch

    def _pop(self, owner: str, jobs: deque[EmbedJob]) -> None:
        jobs.popleft()
        if not jobs:
            del self._owners[owner]

    def __len__(self) -> int:
        return self._waiting


class Worker:
    """One thread and one llama.cpp context; embeds the batches it takes from the queue."""

    def __init__(self, gguf: str, capacity: int, threads: int, normalize: bool, name: str) -> None:
        self.capacity = capacity
        self.normalize = normalize
        self.llm = Llama(
            model_path=gguf,
            embedding=True,
            n_ctx=capacity,
            n_batch=capacity,
            n_ubatch=capacity,  # a sequence of a non-causal model must fit one micro-batch
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.n_embd = self.llm.n_embd()
        self.name = name
        self.thread: threading.Thread | None = None

    def run(self, pieces: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """One llama.cpp batch: a row per sequence, pooled as the model says (and normalised)."""
        llm = self.llm
        batch = llm._batch
        batch.reset()  # type: ignore[no-untyped-call]
        for seq, ids in enumerate(pieces):
            batch.add_sequence(ids, seq, True)
        llm._ctx.kv_cache_clear()  # type: ignore[no-untyped-call]
        llm._ctx.decode(batch)
        out = np.empty((len(pieces), self.n_embd), dtype=np.float32)
        for seq in range(len(pieces)):
            pointer = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, seq)
            if not pointer:
                raise InternalError("llama.cpp returned no pooled embedding (is the GGUF a pooled embedding model?)")
            out[seq] = np.ctypeslib.as_array(pointer, shape=(self.n_embd,))
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        return out

    def serve(self, queue: BatchQueue, budget: int) -> None:
        while True:
            batch = queue.take(budget, self.capacity)
            if batch is None:
                return
            live = [(job, i) for job, i in batch if not job.cancelled]
            if not live:
                continue
            try:
                vectors = self.run([job.ids[i] for job, i in live])
            except Exception as error:  # reported to the callers; the worker lives on
                failure = InternalError(f"embedding engine failed: {error!r}")
                for job, _ in live:
                    job.fail(failure)
                continue
            for (job, i), vector in zip(live, vectors, strict=True):
                job.done(i, vector)

    def close(self) -> None:
        self.llm.close()
