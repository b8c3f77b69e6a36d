"""Credit leases (issue 24): the latency a billed request adds at concurrency 1, and two workers'
throughput at concurrency 64, in one run with interleaved repetitions so a busy machine's drift
hits every target alike. Targets: the mock upstream direct; gatewright bare; gatewright with the
platform on, with credit leases and the settlement journal (the defaults), with leases whose
settlement commit is waited on before the last byte (the journal off, the behaviour before it),
and with a committed hold per request (leases off, the behaviour before them); LiteLLM proxy (2
workers). Non-streaming requests, wrk as the client.

python -m bench.lease_latency [--reps 5] [--duration 5] [--no-litellm] [--json PATH]

Prints the p50 of each target and what it adds over the mock, the ratios the issue names, the
settlement commit as the platform targets' /metrics saw it, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import envs, procs
from bench.load import Target, request_body, run_wrk
from gatewright.cli.serve import read_first_start_keys

log = logging.getLogger("bench.lease_latency")
TOKENS = 16
WAITED = "platform, leases, commit waited"  # the settlement journal off


def start_gateway(
    name: str, catalog: Path, *, platform: bool, leases: bool = True, journal: bool = True, workers: int = 1
) -> procs.Service:
    """``gatewright serve`` from this checkout (``procs.start_gatewright`` with the lease and
    journal switches)."""
    port = procs.free_port()
    data_dir = procs.TMP / f"{name}-{port}-data"
    env = {
        "GATEWRIGHT_CATALOG": str(catalog),
        "GATEWRIGHT_DATA_DIR": str(data_dir),
        "GATEWRIGHT_PORT": str(port),
        "GATEWRIGHT_LOG_LEVEL": "info",
        "GATEWRIGHT_CREDIT_LEASES": "true" if leases else "false",
        "GATEWRIGHT_SETTLEMENT_JOURNAL": "true" if journal else "false",
        "PYTHONPATH": str(procs.ROOT),
        **(procs.PLATFORM_ENV if platform else {}),
    }
    argv = [sys.executable, "-m", "gatewright", "serve", "--workers", str(workers), *([] if platform else ["--bare"])]
    service = procs.spawn(name, argv, port=port, health="/health", env=env, timeout=300)
    if platform:
        service.api_key, _ = read_first_start_keys(data_dir)
        if service.api_key is None:
            service.stop()
            raise RuntimeError(f"{name}: no API key on first start:\n{service.log()[-2000:]}")
    return service


def commit_figures(service: procs.Service) -> dict[str, float]:
    """The ledger's commits as /metrics counts them (one worker's view)."""
    text = httpx.get(f"{service.url}/metrics", timeout=30).text
    count = re.search(r"^gatewright_ledger_commit_seconds_count\S* (\S+)$", text, re.M)
    total = re.search(r"^gatewright_ledger_commit_seconds_sum\S* (\S+)$", text, re.M)
    if not count or not total or not float(count.group(1)):
        return {}
    return {"commits": float(count.group(1)), "mean_commit_ms": 1000 * float(total.group(1)) / float(count.group(1))}


def run(reps: int, duration: float, litellm: bool) -> dict[str, Any]:
    body = procs.TMP / "lease-body.json"
    procs.TMP.mkdir(parents=True, exist_ok=True)
    body.write_bytes(request_body(False, TOKENS))
    services: list[procs.Service] = []
    try:
        mock, catalog = procs.start_mock_with_catalog(TOKENS, "lease")
        services.append(mock)

        def gateway(name: str, **kw: Any) -> Target:
            service = start_gateway(re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"), catalog, **kw)
            services.append(service)
            return Target(name, service)

        c1 = [
            Target("mock (direct)", mock),
            gateway("bare", platform=False),
            gateway("platform, leases", platform=True),
            gateway(WAITED, platform=True, journal=False),
            gateway("platform, hold per request", platform=True, leases=False),
        ]
        c64 = [
            gateway("bare ×2", platform=False, workers=2),
            gateway("platform, leases ×2", platform=True, workers=2),
            gateway(f"{WAITED} ×2", platform=True, journal=False, workers=2),
            gateway("platform, hold per request ×2", platform=True, leases=False, workers=2),
        ]
        if litellm:
            service = procs.start_litellm(envs.venv("litellm"), mock.url, 2)
            services.append(service)
            c64.append(Target("LiteLLM (2 workers)", service))
        for target in [*c1, *c64]:
            run_wrk(target, body, 16, 2.0)  # warm every path (LiteLLM builds its router lazily)
        load_before = os.getloadavg()
        commits_before = {t.name: commit_figures(t.service) for t in c1 if t.service.api_key}
        runs: list[dict[str, Any]] = []
        for rep in range(reps):
            for concurrency, targets in ((1, c1), (64, c64)):
                shift = rep % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    result = run_wrk(target, body, concurrency, duration)
                    target.service.wait_idle()
                    runs.append({"rep": rep, "concurrency": concurrency, "target": target.name, **result})
                    log.info(
                        "rep %d c=%d %-32s %8.0f req/s p50 %.3f ms errors %s",
                        rep,
                        concurrency,
                        target.name,
                        result["rps"],
                        result["total_ms"]["p50"],
                        result["errors"] or 0,
                    )
        commits = {}
        for t in c1:
            if t.service.api_key:  # the measured runs' commits: after minus before (not the warm-up's)
                after, before = commit_figures(t.service), commits_before[t.name]
                count = after["commits"] - before["commits"]
                total = after["mean_commit_ms"] * after["commits"] - before["mean_commit_ms"] * before["commits"]
                commits[t.name] = {"commits": count, "mean_commit_ms": total / count if count else 0.0}
        return {
            "reps": reps,
            "duration": duration,
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "runs": runs,
            "commits": commits,
            "requests_per_target": {t.name: sum(r["requests"] for r in runs if r["target"] == t.name) for t in c1},
        }
    finally:
        for service in reversed(services):
            service.stop()


def summarize(result: dict[str, Any]) -> str:
    def med(target: str, concurrency: int, pick: Any) -> float:
        return statistics.median(
            pick(r) for r in result["runs"] if r["target"] == target and r["concurrency"] == concurrency
        )

    p50 = {
        t: med(t, 1, lambda r: r["total_ms"]["p50"])
        for t in {r["target"] for r in result["runs"] if r["concurrency"] == 1}
    }
    rps = {t: med(t, 64, lambda r: r["rps"]) for t in {r["target"] for r in result["runs"] if r["concurrency"] == 64}}
    mock = p50["mock (direct)"]
    lines = [
        f"load average before {result['load_before']}, after {result['load_after']}; "
        f"{result['reps']} interleaved repetitions of {result['duration']:.0f} s",
        "",
        "| concurrency 1 | p50 ms | added over the mock, ms |",
        "|---|---|---|",
    ]
    platforms = [name for name in ("platform, leases", WAITED, "platform, hold per request") if name in p50]
    for name in ("mock (direct)", "bare", *platforms):
        lines.append(f"| {name} | {p50[name]:.3f} | {p50[name] - mock:.3f} |")
    bare_added = p50["bare"] - mock
    for name in platforms:
        lines.append(f"| {name}: added ÷ bare's added | {(p50[name] - mock) / bare_added:.2f}× | |")
    lines += ["", "| concurrency 64 | requests/s | ÷ LiteLLM |", "|---|---|---|"]
    litellm = rps.get("LiteLLM (2 workers)")
    for name, value in rps.items():
        ratio = f"{value / litellm:.1f}×" if litellm else "–"
        lines.append(f"| {name} | {value:.0f} | {ratio} |")
    lines += ["", "| settlement and lease commits (one worker, whole run) | commits per request | mean commit ms |"]
    lines.append("|---|---|---|")
    for name, figures in result["commits"].items():
        if figures:
            per = figures["commits"] / max(1, result["requests_per_target"][name])
            lines.append(f"| {name} | {per:.2f} | {figures['mean_commit_ms']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    envs.ensure_wrk()
    started = time.time()
    result = run(args.reps, args.duration, not args.no_litellm)
    result["wall_s"] = round(time.time() - started, 1)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(summarize(result))


if __name__ == "__main__":
    main()
