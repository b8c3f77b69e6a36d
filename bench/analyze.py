"""From raw runs to the numbers in the tables: medians across repetitions, the noise between them, and
overheads paired within a repetition (target minus the mock in the same round, then the median)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from bench.stats import spread

Key = tuple[str, int, str]  # mode, concurrency, target


def _by_key(runs: list[dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    grouped: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[(run["mode"], run["concurrency"], run["target"])].append(run)
    return grouped


def _metric(run: dict[str, Any], path: str) -> float:
    section, _, field = path.partition(".")
    value = run.get(section) if not field else (run.get(section) or {}).get(field)
    return float(value) if value is not None else math.nan


LATENCIES = ("total_ms.p50", "total_ms.p90", "total_ms.p99", "ttfb_ms.p50", "ttfb_ms.p90", "ttfb_ms.p99")
METRICS = ("rps", "cpu_ms_per_request", *LATENCIES)


def overhead_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (mode, concurrency, target): medians, noise, paired overheads, errors."""
    grouped = _by_key(result["runs"])
    baseline = result["baseline"]
    rows = []
    for (mode, concurrency, target), runs in grouped.items():
        row: dict[str, Any] = {"mode": mode, "concurrency": concurrency, "target": target}
        for metric in METRICS:
            row[metric] = spread([_metric(r, metric) for r in runs])
        base_runs = {r["rep"]: r for r in grouped.get((mode, concurrency, baseline), [])}
        if target != baseline:
            for metric in LATENCIES:
                paired = [(r, base_runs[r["rep"]]) for r in runs if r["rep"] in base_runs]
                diffs = [_metric(r, metric) - _metric(base, metric) for r, base in paired]
                row["overhead " + metric] = spread(diffs)
        row["errors"] = sum(sum(r["errors"].values()) for r in runs)
        row["requests"] = sum(r["requests"] for r in runs)
        rows.append(row)
    order = {name: i for i, name in enumerate(result["targets"])}
    rows.sort(key=lambda r: (r["mode"] != "non-streaming", r["concurrency"], order.get(r["target"], 99)))
    return rows


def find(rows: list[dict[str, Any]], mode: str, concurrency: int, prefix: str) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["mode"] == mode and r["concurrency"] == concurrency and r["target"].startswith(prefix)),
        None,
    )


def engine_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in result["speed"]:
        grouped[(run["engine"], run["concurrency"])].append(run)
    rows = []
    for (engine, concurrency), runs in grouped.items():
        firsts = [r["requests"] for r in runs]
        rows.append(
            {
                "engine": engine,
                "concurrency": concurrency,
                "ttft_s": spread([statistics.fmean(x["ttft_from_batch_s"] for x in reqs) for reqs in firsts]),
                # Under concurrency TTFT includes queueing, so prompt speed is only read at 1.
                "prompt_tps": spread([reqs[0]["prompt_tps"] if concurrency == 1 else math.nan for reqs in firsts]),
                "gen_tps": spread([statistics.fmean(x["gen_tps"] for x in reqs if x["gen_tps"]) for reqs in firsts]),
                "aggregate_output_tps": spread([r["aggregate_output_tps"] for r in runs]),
                "prompt_tokens": runs[0]["requests"][0]["prompt_tokens"],
                "output_tokens": sorted({x["output_tokens"] for reqs in firsts for x in reqs}),
            }
        )
    order = {name: i for i, name in enumerate(result["engines"])}
    rows.sort(key=lambda r: (r["concurrency"], order.get(r["engine"], 99)))
    return rows


def engine_ratio(result: dict[str, Any], engine: str, reference: str, metric: str = "gen_tps") -> dict[str, float]:
    """engine / reference for one metric at concurrency 1, paired within each repetition."""
    per_rep: dict[int, dict[str, float]] = defaultdict(dict)
    for run in result["speed"]:
        if run["concurrency"] == 1 and run["requests"][0][metric]:
            per_rep[run["rep"]][run["engine"]] = run["requests"][0][metric]
    ratios = [r[engine] / r[reference] for r in per_rep.values() if engine in r and reference in r]
    return spread(ratios)


def cache_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in result["cache"]:
        grouped[run["engine"]].append(run)
    rows = []
    for engine, runs in grouped.items():
        rows.append(
            {
                "engine": engine,
                "prompt_tokens": runs[0]["cold"]["prompt_tokens"],
                "cold_s": spread([r["cold"]["ttft_s"] for r in runs]),
                "cached_s": spread([r["cached"]["ttft_s"] for r in runs]),
                "speedup": spread([r["cold"]["ttft_s"] / r["cached"]["ttft_s"] for r in runs]),
                "reported_cached_tokens": [
                    ((r["cached"].get("reported_usage") or {}).get("prompt_tokens_details") or {}).get("cached_tokens")
                    for r in runs
                ],
            }
        )
    return rows
