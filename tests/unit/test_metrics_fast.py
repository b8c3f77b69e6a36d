"""The direct cells in core/metrics.py record exactly what prometheus-client's public API would."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Histogram

from gatewright.core.metrics import _Buckets, _Tally

AMOUNTS = [0.0, 0.004, 0.005, 0.0051, 0.3, 2.5, 7.0, 1e9, -1.0]


def _samples(registry: CollectorRegistry, name: str) -> list[tuple[str, dict[str, str], float]]:
    found = []
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.startswith(name) and not s.name.endswith("_created"):
                found.append((s.name.removeprefix(name), s.labels, s.value))
    return found


def test_histogram_cells_match_observe() -> None:
    registry = CollectorRegistry()
    public = Histogram("public", "", ("model",), buckets=(0.005, 0.3, 2.5), registry=registry)
    direct = Histogram("direct", "", ("model",), buckets=(0.005, 0.3, 2.5), registry=registry)
    cells = _Buckets(direct.labels("m"))
    for amount in [*AMOUNTS, math.nan]:
        public.labels("m").observe(amount)
        cells.observe(amount)
    expected, got = _samples(registry, "public"), _samples(registry, "direct")
    assert len(expected) == 6  # four buckets (with +Inf), count, sum
    assert [s[:2] for s in got] == [s[:2] for s in expected]
    for (name, _, want), (_, _, have) in zip(expected, got, strict=True):
        assert have == want or (math.isnan(have) and math.isnan(want)), name


def test_counter_cell_matches_inc() -> None:
    registry = CollectorRegistry()
    public = Counter("public", "", ("model", "kind"), registry=registry)
    direct = Counter("direct", "", ("model", "kind"), registry=registry)
    tally = _Tally(direct.labels("m", "output"))
    for amount in (1, 16, 3):
        public.labels("m", "output").inc(amount)
        tally.inc(amount)
    assert (
        _samples(registry, "direct")
        == _samples(registry, "public")
        == [("_total", {"model": "m", "kind": "output"}, 20.0)]
    )
