"""The embedding engine's queue: batches are filled one input at a time, round-robin across
callers, so a small request is never stuck behind another caller's large one."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gatewright.backends.embedder.engine import BatchQueue, EmbedJob
from gatewright.core.errors import Overloaded


def job(loop: asyncio.AbstractEventLoop, sizes: list[int]) -> EmbedJob:
    ids = [[7] * n for n in sizes]
    return EmbedJob(ids, loop, loop.create_future(), np.zeros((len(ids), 4), dtype=np.float32))


def owners(batch: list[tuple[EmbedJob, int]], names: dict[int, str]) -> list[str]:
    return [names[id(j)] + str(i) for j, i in batch]


async def test_a_small_request_joins_the_next_batch() -> None:
    loop = asyncio.get_running_loop()
    queue = BatchQueue(max_inputs=10_000)
    big, small = job(loop, [10] * 256), job(loop, [10])
    names = {id(big): "big", id(small): "small"}
    queue.put("key-a", big)
    first = queue.take(budget=40, capacity=256)
    assert first is not None and owners(first, names) == ["big0", "big1", "big2", "big3"]
    queue.put("key-b", small)  # arrives while 252 of big's inputs still wait
    second = queue.take(budget=40, capacity=256)
    assert second is not None and owners(second, names) == ["small0", "big4", "big5", "big6"]
    assert len(queue) == 256 - 7


async def test_owners_alternate_within_a_batch_and_fifo_within_one() -> None:
    loop = asyncio.get_running_loop()
    queue = BatchQueue(max_inputs=100)
    a1, a2, b = job(loop, [5, 5]), job(loop, [5]), job(loop, [5, 5, 5])
    names = {id(a1): "a1-", id(a2): "a2-", id(b): "b-"}
    queue.put("a", a1)
    queue.put("a", a2)
    queue.put("b", b)
    batch = queue.take(budget=1000, capacity=1000)
    assert batch is not None
    assert owners(batch, names) == ["a1-0", "b-0", "a1-1", "b-1", "a2-0", "b-2"]
    assert len(queue) == 0


async def test_a_batch_never_exceeds_capacity_and_cancelled_jobs_are_dropped() -> None:
    loop = asyncio.get_running_loop()
    queue = BatchQueue(max_inputs=100)
    gone, kept = job(loop, [100, 100]), job(loop, [200, 30])
    names = {id(gone): "gone", id(kept): "kept"}
    queue.put("a", gone)
    queue.put("b", kept)
    gone.cancelled = True  # its caller left
    batch = queue.take(budget=256, capacity=256)
    assert batch is not None and owners(batch, names) == ["kept0", "kept1"]
    assert len(queue) == 0


async def test_a_full_queue_refuses_with_503() -> None:
    loop = asyncio.get_running_loop()
    queue = BatchQueue(max_inputs=10)
    queue.put("a", job(loop, [1] * 8))
    with pytest.raises(Overloaded):
        queue.put("b", job(loop, [1] * 3))
    queue.put("b", job(loop, [1] * 2))
    assert len(queue.close()) == 2  # the waiting jobs, handed back to be failed
    assert queue.take(budget=10, capacity=10) is None
