"""Gauges of state copied at scrape time: breaker states and an engine's queue and active sequences."""

from __future__ import annotations

from gatewright.core.metrics import BREAKER_STATE, ENGINE_ACTIVE, ENGINE_QUEUED, sample
from gatewright.core.routing import Breaker


class _Engine:
    def engine_stats(self) -> tuple[int, int]:
        return 3, 2


def test_sample_copies_breakers_and_engine_stats() -> None:
    closed, probation, broken = Breaker(threshold=1, cooldown=0.0), Breaker(threshold=1, cooldown=0.0), Breaker()
    probation.record_failure(now=0.0)  # tripped, cooldown over: half-open
    for _ in range(broken.threshold):
        broken.record_failure(now=10**9)
    sample([("a", closed), ("b", probation), ("c", broken)], [("engine", _Engine()), ("upstream", object())])
    assert [BREAKER_STATE.labels(n)._value.get() for n in "abc"] == [0, 1, 2]
    assert ENGINE_QUEUED.labels("engine")._value.get() == 3 and ENGINE_ACTIVE.labels("engine")._value.get() == 2
    assert ("upstream",) not in ENGINE_QUEUED._metrics  # no engine: no series
