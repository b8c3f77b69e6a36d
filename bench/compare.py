"""Before and after: a run of ``bench.run --baseline`` (each gatewright target measured beside the
same target from another checkout, interleaved in the same repetitions) as one table per mode.

python -m bench.compare bench/results/<stamp>.json [--label c465a88]

``bench.run --baseline-commit REV`` makes the worktree, runs both and prints this table at the end.
The ratio column is after ÷ before (the median of the paired ratios): 0.50× is half the CPU.

For each cell: the median over repetitions of req/s and CPU ms per request, before and after, and
the paired change: within one repetition the two targets ran back to back, so the machine's drift
(other work on a shared host) hits both alike and their ratio is steadier than either. Noise is
judged from that repetition: the range of the paired changes across repetitions. A change is
called a regression only when every repetition shows the after side worse (with 5 repetitions a
sign test gives p ≈ 0.03 that this happens by chance), "better" when every one shows it better,
and "within noise" otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

METRICS = (("rps", "req/s", True), ("cpu_ms_per_request", "CPU ms/req", False))  # (key, name, higher is better)


def _paired(runs: list[dict[str, Any]], key: str) -> dict[tuple[str, int, str], dict[int, float]]:
    out: dict[tuple[str, int, str], dict[int, float]] = defaultdict(dict)
    for run in runs:
        if run.get(key) is not None:
            out[(run["mode"], run["concurrency"], run["target"])][run["rep"]] = float(run[key])
    return out


def compare(results: dict[str, Any], label: str) -> str:
    runs = results["overhead"]["runs"]
    suffix = f" @{label}"
    lines: list[str] = []
    for mode in ("non-streaming", "streaming"):
        rows = []
        for key, name, higher_better in METRICS:
            cells = _paired(runs, key)
            for (cell_mode, concurrency, target), after in sorted(cells.items()):
                if cell_mode != mode or target.endswith(suffix) or not target.startswith("gatewright"):
                    continue
                before = cells.get((mode, concurrency, target + suffix))
                if not before:
                    continue
                reps = sorted(set(after) & set(before))
                changes = [(after[r] - before[r]) / before[r] for r in reps]
                worse = [(-c if higher_better else c) > 0 for c in changes]
                verdict = "regression" if all(worse) else ("better" if not any(worse) else "within noise")
                rows.append(
                    [
                        name,
                        str(concurrency),
                        target,
                        f"{statistics.median(before[r] for r in reps):,.3g}",
                        f"{statistics.median(after[r] for r in reps):,.3g}",
                        f"{statistics.median(changes):+.0%} ({min(changes):+.0%} … {max(changes):+.0%})",
                        f"{1 + statistics.median(changes):.2f}×",
                        f"{sum(worse)} of {len(reps)}",
                        verdict,
                    ]
                )
        if not rows:
            continue
        head = ["metric", "c", "target", label, "after", "paired change (range)", "ratio", "reps worse", "verdict"]
        lines += [f"#### {mode}", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--label", default="before", help="the baseline's label (bench.run --baseline-label)")
    args = parser.parse_args(argv)
    print(compare(json.loads(args.results.read_text()), args.label))


if __name__ == "__main__":
    main()
