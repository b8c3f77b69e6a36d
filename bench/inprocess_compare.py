"""``bench.inprocess`` for two checkouts, alternating, so a busy machine's drift hits both alike.

python -m bench.inprocess_compare /path/to/other/checkout [--pairs 6] [--label before]

Each pair runs the other checkout, then this one (each a fresh process, ``--rounds 1``); the table
gives per case the median µs per request of each side, the median of the paired changes, and how
many pairs agree on its sign (all of them is what a real difference looks like; a split is noise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _run(checkout: Path, requests: int) -> dict[str, float]:
    script = ROOT / "bench" / "inprocess.py"
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    argv = [sys.executable, str(script), "--requests", str(requests), "--rounds", "1", "--json"]
    done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, check=True, timeout=900)
    result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: values[0] for name, values in result.items()}


def compare(other: Path, pairs: int, requests: int) -> dict[str, Any]:
    before: list[dict[str, float]] = []
    after: list[dict[str, float]] = []
    for _ in range(pairs):
        before.append(_run(other, requests))
        after.append(_run(ROOT, requests))
    return {"before": before, "after": after}


def table(data: dict[str, Any], label: str) -> str:
    rows = [
        f"| case | {label} µs/req | after µs/req | change (median of pairs) | pairs worse |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in data["before"][0]:
        b = [run[case] for run in data["before"]]
        a = [run[case] for run in data["after"]]
        changes = [(x - y) / y for x, y in zip(a, b, strict=True)]
        worse = sum(c > 0 for c in changes)
        spread = f"({min(changes):+.0%} … {max(changes):+.0%})"
        rows.append(
            f"| {case} | {statistics.median(b):.1f} | {statistics.median(a):.1f} | "
            f"{statistics.median(changes):+.1%} {spread} | {worse} of {len(changes)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, help="the other checkout (e.g. a git worktree of the base commit)")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--label", default="before")
    parser.add_argument("--save", type=Path, help="write the raw numbers here (JSON)")
    args = parser.parse_args(argv)
    data = compare(args.other.resolve(), args.pairs, args.requests)
    if args.save:
        args.save.write_text(json.dumps(data, indent=1))
    print(table(data, args.label))


if __name__ == "__main__":
    main()
