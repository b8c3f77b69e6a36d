"""The embedded engine's queue: requests from different callers take turns; one caller's requests
keep their order; a full queue refuses instead of growing."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gatewright.backends.llamacpp.backend import FairQueue
from gatewright.core.errors import Overloaded


def _jobs(queue: FairQueue, count: int) -> list[Any]:
    return [queue.take() for _ in range(count)]


def test_callers_take_turns_and_each_keeps_its_order() -> None:
    queue = FairQueue(limit=16)
    for owner, n in (("a", 4), ("b", 2), ("c", 1)):
        for i in range(n):
            queue.put(owner, f"{owner}{i}")  # type: ignore[arg-type]
    assert _jobs(queue, 7) == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    assert len(queue) == 0


def test_a_caller_that_arrives_late_is_served_before_the_busy_one_goes_again() -> None:
    queue = FairQueue(limit=16)
    for i in range(3):
        queue.put("busy", f"busy{i}")  # type: ignore[arg-type]
    assert _jobs(queue, 1) == ["busy0"]
    queue.put("late", "late0")  # type: ignore[arg-type]
    assert _jobs(queue, 3) == ["late0", "busy1", "busy2"]


def test_a_full_queue_refuses_with_503() -> None:
    queue = FairQueue(limit=2)
    queue.put("a", "a0")  # type: ignore[arg-type]
    queue.put("b", "b0")  # type: ignore[arg-type]
    with pytest.raises(Overloaded) as refused:
        queue.put("c", "c0")  # type: ignore[arg-type]
    assert refused.value.status == 503
    queue.put("a", None)  # the stop signal is always accepted
    assert _jobs(queue, 3) == ["a0", "b0", None]


def test_take_waits_for_work() -> None:
    queue = FairQueue(limit=4)
    got: list[Any] = []
    taker = threading.Thread(target=lambda: got.append(queue.take()))
    taker.start()
    taker.join(0.1)
    assert taker.is_alive() and not got
    queue.put("a", "a0")  # type: ignore[arg-type]
    taker.join(5)
    assert got == ["a0"]


def test_poll_takes_without_waiting() -> None:
    queue = FairQueue(limit=4)
    assert queue.poll() == (False, None)  # the engine keeps decoding instead of waiting
    queue.put("a", "a0")  # type: ignore[arg-type]
    assert queue.poll() == (True, "a0")
    queue.put("a", None)
    assert queue.poll() == (True, None)  # the stop signal
