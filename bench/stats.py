"""Percentiles of one run, and medians with their spread across repeated runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (what wrk and most load tools report)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": math.nan, "p90": math.nan, "p99": math.nan, "mean": math.nan, "max": math.nan}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "mean": statistics.fmean(ordered),
        "max": ordered[-1],
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median of repeated runs and their noise: (max - min) / median, in percent."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "noise_pct": math.nan, "runs": 0}
    median = statistics.median(clean)
    noise = (max(clean) - min(clean)) / median * 100 if median else math.nan
    return {"median": median, "min": min(clean), "max": max(clean), "noise_pct": noise, "runs": len(clean)}
