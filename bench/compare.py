"""Before and after: a run of ``bench.run --baseline`` (each gatewright target measured beside the
same target from another checkout, interleaved in the same repetitions) as one table per mode.

python -m bench.compare bench/results/<stamp>.json [--label c465a88]

For each cell: the median over repetitions of req/s and CPU ms per request, after and before, the
change, and the noise: the spread (highest − lowest, as a share of the median) of each side's own
repetitions. A change is called a regression only when it is worse than both sides' spreads, i.e.
larger than what repeating the same code measured on this machine in this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

METRICS = (("rps", "req/s", True), ("cpu_ms_per_request", "CPU ms/req", False))  # (key, name, higher is better)


def _spread(values: list[float]) -> float:
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


def compare(results: dict[str, Any], label: str) -> str:
    cells: dict[tuple[str, int, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in results["overhead"]["runs"]:
        for key, _, _ in METRICS:
            if run.get(key) is not None:
                cells[(run["mode"], run["concurrency"], run["target"])][key].append(float(run[key]))
    suffix = f" @{label}"
    lines: list[str] = []
    for mode in ("non-streaming", "streaming"):
        rows = []
        for (cell_mode, concurrency, target), after in sorted(cells.items()):
            if cell_mode != mode or target.endswith(suffix) or not target.startswith("gatewright"):
                continue
            before = cells.get((mode, concurrency, target + suffix))
            if before is None:
                continue
            row = [str(concurrency), target]
            for key, _, higher_better in METRICS:
                a, b = statistics.median(after[key]), statistics.median(before[key])
                change = (a - b) / b
                noise = max(_spread(after[key]), _spread(before[key]))
                worse = -change if higher_better else change
                verdict = "regression" if worse > noise else ("better" if -worse > noise else "within noise")
                row += [f"{b:,.3g}", f"{a:,.3g}", f"{change:+.0%}", f"±{noise:.0%}", verdict]
            rows.append(row)
        if not rows:
            continue
        head = ["c", "target"]
        for _, name, _ in METRICS:
            head += [f"{name} before", f"{name} after", "change", "noise", "verdict"]
        lines += [f"#### {mode}", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    reps = results["overhead"]["config"]["reps"]
    lines.append(f"Medians of {reps} repetitions; noise = the larger of the two sides' (max − min) / median.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--label", default="before", help="the baseline's label (bench.run --baseline-label)")
    args = parser.parse_args(argv)
    print(compare(json.loads(args.results.read_text()), args.label))


if __name__ == "__main__":
    main()
