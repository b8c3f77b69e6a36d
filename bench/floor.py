"""What a request costs below the gateway, and what the gateway's own work costs (issue 24).

One run, wrk at one concurrency against the mock upstream, repetitions interleaved, CPU per request
of each server process (its whole process tree, from /proc):
- ``echo``: gatewright's server (``bench.floor_app``: uvicorn, uvloop, the corked protocol) with
  an app that reads the body and answers a fixed completion: the server and the kernel;
- ``relay``: the same app sending a fixed request through gatewright's upstream client to the mock
  and answering its body: everything a gateway cannot avoid, with no gateway in it;
- ``relay + spin``: the relay spending, in a loop of plain Python, the CPU the bare gateway spends
  beyond the relay (measured in the first repetition), so it runs at the gateway's rate. Its CPU
  less the spin is the floor at that rate: a process that sleeps between requests pays more in
  the kernel for each than one that never does;
- ``bare`` and ``platform``: ``gatewright serve`` from this checkout, and from ``--baseline-commit``
  (a git worktree on the same interpreter and libraries) when given.

python -m bench.floor [--reps 3] [--duration 4] [--concurrency 16] [--baseline-commit c465a88]
    [--no-platform] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.load import Target, request_body, run_wrk

log = logging.getLogger("bench.floor")
TOKENS = 16
SPUN = "relay + spin"


@dataclass
class Figures:
    cpu_us: list[float] = field(default_factory=list)  # per request, one value a repetition
    rps: list[float] = field(default_factory=list)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_us)


def start_floor(mode: str, upstream: str, spin_us: int = 0) -> procs.Service:
    port = procs.free_port()
    argv = [sys.executable, "-m", "bench.floor_app", "--port", str(port)]
    env = {"FLOOR_MODE": mode, "FLOOR_UPSTREAM": upstream, "FLOOR_SPIN_US": str(spin_us)}
    return procs.spawn(f"floor-{mode}-{spin_us}", argv, port=port, health="/health", env=env)


def measure(target: Target, body: Path, concurrency: int, duration: float, into: Figures) -> None:
    service = target.service
    service.wait_idle()
    before = service.cpu_seconds()
    result = run_wrk(target, body, concurrency, duration)
    spent = service.cpu_seconds() - before
    if result["errors"] or not result["requests"]:
        raise RuntimeError(f"{target.name}: {result['requests']} requests, errors {result['errors']}")
    into.cpu_us.append(1e6 * spent / result["requests"])
    into.rps.append(result["rps"])
    log.info("%-24s %7.0f req/s %6.1f µs/request", target.name, result["rps"], into.cpu_us[-1])


def run(reps: int, duration: float, concurrency: int, baseline: Path | None, platform: bool) -> dict[str, Any]:
    procs.TMP.mkdir(parents=True, exist_ok=True)
    body = procs.TMP / "floor-body.json"
    body.write_bytes(request_body(False, TOKENS))
    services: list[procs.Service] = []
    try:
        mock, catalog = procs.start_mock_with_catalog(TOKENS, "floor")
        services.append(mock)
        targets: list[Target] = []

        def add(name: str, service: procs.Service) -> None:
            services.append(service)
            targets.append(Target(name, service))

        add("echo", start_floor("echo", mock.url))
        add("relay", start_floor("relay", mock.url))
        kinds = [("bare", False), *([("platform", True)] if platform else [])]
        for kind, on in kinds:
            add(kind, procs.start_gatewright(f"floor-{kind}", catalog, platform=on, log_level="warning"))
            if baseline is not None:
                service = procs.start_gatewright(
                    f"floor-{kind}-base", catalog, platform=on, log_level="warning", checkout=baseline
                )
                add(f"{kind}, baseline", service)
        for target in targets:
            run_wrk(target, body, concurrency, 1.0)  # warm every path
        figures = {target.name: Figures() for target in targets}
        spin = 0
        for rep in range(reps):
            shift = rep % len(targets)
            for target in targets[shift:] + targets[:shift]:
                measure(target, body, concurrency, duration, figures[target.name])
            if rep == 0:  # the relay made to spend what the bare gateway spends beyond it
                spin = max(1, round(figures["bare"].cpu - figures["relay"].cpu))
                add(SPUN, start_floor("relay", mock.url, spin))
                run_wrk(targets[-1], body, concurrency, 1.0)
                figures[SPUN] = Figures()
                measure(targets[-1], body, concurrency, duration, figures[SPUN])
        return {
            "reps": reps,
            "duration": duration,
            "concurrency": concurrency,
            "baseline": str(baseline) if baseline else None,
            "spin_us": spin,
            "figures": {name: {"cpu_us": f.cpu_us, "rps": f.rps} for name, f in figures.items()},
        }
    finally:
        for service in reversed(services):
            service.stop()


def summarize(result: dict[str, Any]) -> str:
    figures = {name: Figures(raw["cpu_us"], raw["rps"]) for name, raw in result["figures"].items()}
    base = figures.get("bare, baseline")

    def baseline_of(name: str) -> Figures | None:
        return figures.get("platform, baseline") if name.startswith("platform") else base

    lines = [
        f"wrk, concurrency {result['concurrency']}, {result['reps']} interleaved repetitions of "
        f"{result['duration']:.0f} s; CPU per request: the median of the repetitions",
        "",
        "| server | req/s | CPU µs/request | ÷ the baseline (the platform's for the platform) |",
        "|---|---|---|---|",
    ]
    for name, f in figures.items():
        of = baseline_of(name)
        ratio = f"{f.cpu / of.cpu:.2f}×" if of else "–"
        label = f"{name} ({result['spin_us']} µs)" if name == SPUN else name
        lines.append(f"| {label} | {statistics.median(f.rps):.0f} | {f.cpu:.1f} | {ratio} |")
    floor = figures[SPUN].cpu - result["spin_us"]
    bare = figures["bare"].cpu
    lines += [
        "",
        f"- the floor at the bare gateway's rate (relay + spin, less the spin): {floor:.1f} µs a request",
        f"- the bare gateway's own work above it: {bare - floor:.1f} µs a request",
    ]
    if "platform" in figures:
        lines.append(f"- the platform's own work above it: {figures['platform'].cpu - floor:.1f} µs a request")
    for kind in ("bare", "platform"):
        of = baseline_of(kind)
        if of and kind in figures:
            half = of.cpu / 2
            lines.append(
                f"- half of the baseline's {kind} request: {half:.1f} µs, which leaves {half - floor:.1f} µs "
                f"above the floor for everything the {kind} gateway does"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--baseline-commit", help="a commit measured beside this checkout (a git worktree of it)")
    parser.add_argument("--no-platform", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per health check
    baseline = None
    if args.baseline_commit:
        from bench.run import baseline_worktree

        baseline = baseline_worktree(args.baseline_commit)
    result = run(args.reps, args.duration, args.concurrency, baseline, not args.no_platform)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(summarize(result))


if __name__ == "__main__":
    main()
